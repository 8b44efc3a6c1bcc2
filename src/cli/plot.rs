//! `ping --plot`: the latency-by-percentile chart (the HdrHistogram view) as an SVG file.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::CliError;

/// The x position of quantile `q`: the number of nines, so 90%, 99%, 99.9% are evenly
/// spaced and the tail gets the room it deserves.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

/// Points (x = nines of the percentile, y = latency in µs) of a nanosecond histogram.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let top = nines(1.0 - 1.0 / h.len().max(2) as f64);
    h.iter_quantiles(5)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()).min(top),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect()
}

/// Write the chart of `h` (nanoseconds) to `path` as SVG, titled `title`.
pub fn write_svg(h: &Histogram<u64>, title: &str, path: &Path) -> Result<(), CliError> {
    let fail = |e: &dyn std::fmt::Display| {
        CliError::Setup(format!("cannot plot to {}: {e}", path.display()))
    };
    if h.is_empty() {
        return Err(fail(&"no samples"));
    }
    let points = percentile_curve(h);
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max).ceil();
    let y_max = (h.max() as f64 / 1000.0 * 1.1).max(1.0);
    let y_min = (h.min() as f64 / 1000.0 * 0.9).max(0.01);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("round trip (µs, log scale)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            let q = 100.0 * (1.0 - 10f64.powf(-x));
            let digits = (x.round() as usize).saturating_sub(2);
            format!("{q:.digits$}%")
        })
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_rises_with_the_percentile_and_the_svg_is_written() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        for i in 1..=10_000u64 {
            h.record(i * 100).unwrap();
        }
        let c = percentile_curve(&h);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(c.last().unwrap().0 <= 4.0 + 1e-9);
        let path = std::env::temp_dir().join(format!("nakcast-plot-{}.svg", std::process::id()));
        write_svg(&h, "test", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{svg:.200}"
        );
        assert!(svg.contains("99%"), "percentile labels");
    }
}
