//! `nakcast doctor`: check the host's multicast set-up, with a fix for each problem.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Args;
use nakcast::transport::{
    RecvBatch, ResolvedInterface, open_multicast_receiver, open_sender, resolve_interface,
};
use nakcast::{Interface, SocketConfig};
use serde_json::json;

use super::{CliError, print_json};

/// `nakcast doctor`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    nakcast doctor --interface 127.0.0.1                 # loopback (single host)\n  \
    nakcast doctor --interface eth0 --group 239.255.0.1:40456\n\n\
    Checks: the interface exists, is up and multicast-capable; a multicast route exists; a\n\
    datagram sent to the group comes back on loopback; the socket buffers nakcast requests fit\n\
    net.core.rmem_max / wmem_max. Each problem is printed with the command that fixes it.\n\
    Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed.")]
pub struct DoctorArgs {
    /// Interface to check: an address (127.0.0.1) or a name (eth0); `any` follows the
    /// routing table.
    #[arg(long, value_name = "IP|NAME", default_value = "any")]
    interface: String,
    /// Group to test, `ADDR` or `ADDR:PORT` (default 239.255.0.1 on a free port).
    #[arg(long, value_name = "ADDR[:PORT]", default_value = "239.255.0.1")]
    group: String,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: String, fix: Option<String>) -> Check {
    Check {
        name,
        status,
        detail,
        fix,
    }
}

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_MULTICAST: u32 = 0x1000;

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn iface_flags(name: &str) -> Option<u32> {
    let s = read_trim(&format!("/sys/class/net/{name}/flags"))?;
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// The device of the longest-prefix IPv4 route to `dst` in /proc/net/route.
fn route_device(dst: Ipv4Addr) -> Option<(String, u32)> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    let d = u32::from_ne_bytes(dst.octets());
    let mut best: Option<(String, u32)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dest), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        // /proc/net/route prints addresses in host byte order of the network-order value.
        if d & mask == dest & mask {
            let bits = mask.count_ones();
            if best.as_ref().is_none_or(|(_, b)| bits >= *b) {
                best = Some((f[0].to_owned(), bits));
            }
        }
    }
    best
}

/// Run `nakcast doctor`.
pub fn run(a: DoctorArgs) -> Result<(), CliError> {
    let group: SocketAddr = match a.group.parse::<SocketAddr>() {
        Ok(g) => g,
        Err(_) => {
            let ip: IpAddr = a.group.parse().map_err(|_| {
                CliError::Usage(format!(
                    "--group {:?} is not ADDR or ADDR:PORT (e.g. 239.255.0.1:40456)",
                    a.group
                ))
            })?;
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
                .map_err(|e| CliError::Setup(format!("cannot bind a UDP socket: {e}")))?;
            SocketAddr::new(ip, port)
        }
    };
    let Ok(interface) = a.interface.parse::<Interface>();
    let mut checks = Vec::new();

    // 1. The group.
    if !group.ip().is_multicast() {
        checks.push(check(
            "group",
            Status::Fail,
            format!("{} is not a multicast address", group.ip()),
            Some("use a group in 224.0.0.0/4, e.g. --group 239.255.0.1:40456 (239/8 is for private use)".into()),
        ));
    }

    // 2. The interface exists.
    let resolved: Option<ResolvedInterface> = match resolve_interface(&interface) {
        Ok(r) => {
            checks.push(check(
                "interface",
                Status::Pass,
                if interface == Interface::Any {
                    "any: the routing table chooses the outgoing interface".into()
                } else {
                    format!("{} resolves to {r}", a.interface)
                },
                None,
            ));
            Some(r)
        }
        Err(e) => {
            checks.push(check(
                "interface",
                Status::Fail,
                format!("{}: {e}", a.interface),
                Some("list interfaces with `ip -br addr` and pass one of their names or addresses with --interface".into()),
            ));
            None
        }
    };

    // 3. Up and multicast-capable.
    let route = match group.ip() {
        IpAddr::V4(g) => route_device(g),
        IpAddr::V6(_) => None,
    };
    let name = if interface == Interface::Any {
        route.as_ref().map(|(n, _)| n.clone())
    } else {
        resolved.as_ref().and_then(|r| r.name.clone())
    };
    if let Some(name) = &name {
        match iface_flags(name) {
            Some(flags) => {
                let up = flags & IFF_UP != 0;
                let mc = flags & IFF_MULTICAST != 0;
                let lo = flags & IFF_LOOPBACK != 0;
                checks.push(if !up {
                    check(
                        "link up",
                        Status::Fail,
                        format!("{name} is down (flags {flags:#x})"),
                        Some(format!("ip link set {name} up")),
                    )
                } else {
                    check("link up", Status::Pass, format!("{name} is up"), None)
                });
                checks.push(match (mc, lo) {
                    (true, _) => check(
                        "multicast flag",
                        Status::Pass,
                        format!("{name} has MULTICAST"),
                        None,
                    ),
                    (false, true) => check(
                        "multicast flag",
                        Status::Warn,
                        format!(
                            "{name} is loopback without the MULTICAST flag: Linux still loops \
                             multicast back when the interface is chosen by address (--interface \
                             127.0.0.1); the loopback test below is what counts"
                        ),
                        Some(format!("ip link set {name} multicast on")),
                    ),
                    (false, false) => check(
                        "multicast flag",
                        Status::Fail,
                        format!("{name} lacks the MULTICAST flag (flags {flags:#x})"),
                        Some(format!("ip link set {name} multicast on")),
                    ),
                });
            }
            None => checks.push(check(
                "link up",
                Status::Warn,
                format!("cannot read /sys/class/net/{name}/flags"),
                Some(format!("check with `ip link show {name}`")),
            )),
        }
    }

    // 4. A multicast route.
    if group.is_ipv4() {
        let explicit = interface != Interface::Any;
        checks.push(match &route {
            Some((dev, bits)) => {
                let mismatch = name.as_deref().is_some_and(|n| n != dev);
                check(
                    "multicast route",
                    if mismatch && !explicit {
                        Status::Warn
                    } else {
                        Status::Pass
                    },
                    format!(
                        "{} routes via {dev} (/{bits}){}",
                        group.ip(),
                        if mismatch {
                            format!(
                                "; nakcast sets IP_MULTICAST_IF to {} explicitly, so sends use it anyway",
                                a.interface
                            )
                        } else {
                            String::new()
                        }
                    ),
                    None,
                )
            }
            None => check(
                "multicast route",
                if explicit { Status::Warn } else { Status::Fail },
                format!("no route matches {}", group.ip()),
                Some(format!(
                    "ip route add 224.0.0.0/4 dev {} (or always pass --interface)",
                    name.as_deref().unwrap_or("IFACE")
                )),
            ),
        });
    }

    // 5. A datagram to the group comes back on loopback.
    let cfg = SocketConfig {
        interface: interface.clone(),
        ..SocketConfig::default()
    };
    let mut warnings = Vec::new();
    let mut buffers = None;
    if group.ip().is_multicast() {
        checks.push(
            match loopback_test(group, &cfg, &mut warnings, &mut buffers) {
                Ok(rtt) => check(
                    "loopback delivery",
                    Status::Pass,
                    format!("a datagram sent to {group} came back in {rtt:?}"),
                    None,
                ),
                Err(e) => check(
                    "loopback delivery",
                    Status::Fail,
                    e,
                    Some(format!(
                        "make sure the interface is up and multicast-capable, a route exists \
                     (ip route add 224.0.0.0/4 dev {}), and no firewall drops UDP port {} \
                     (`nft list ruleset`, `iptables -L`)",
                        name.as_deref().unwrap_or("IFACE"),
                        group.port()
                    )),
                ),
            },
        );
    }

    // 6. Socket buffer limits.
    for (sysctl, want) in [
        ("net.core.rmem_max", cfg.recv_buffer),
        ("net.core.wmem_max", cfg.send_buffer),
    ] {
        let path = format!("/proc/sys/{}", sysctl.replace('.', "/"));
        checks.push(
            match read_trim(&path).and_then(|s| s.parse::<usize>().ok()) {
                Some(max) if max >= want => check(
                    "buffer limit",
                    Status::Pass,
                    format!("{sysctl} = {max} >= the {want} bytes nakcast requests"),
                    None,
                ),
                Some(max) => check(
                    "buffer limit",
                    Status::Warn,
                    format!(
                        "{sysctl} = {max} < the {want} bytes nakcast requests: the kernel clamps \
                         the socket buffer, so bursts overflow it sooner (more NAKs and repairs)"
                    ),
                    Some(format!(
                        "sysctl -w {sysctl}={want} (persist it in /etc/sysctl.d/)"
                    )),
                ),
                None => check(
                    "buffer limit",
                    Status::Warn,
                    format!("cannot read {path}"),
                    None,
                ),
            },
        );
    }
    if let Some((recv, send)) = buffers {
        checks.push(check(
            "granted buffers",
            if warnings.is_empty() {
                Status::Pass
            } else {
                Status::Warn
            },
            format!("effective SO_RCVBUF {recv} B, SO_SNDBUF {send} B"),
            warnings.first().cloned(),
        ));
    }

    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    for c in &checks {
        println!("[{}] {:<18} {}", c.status.label(), c.name, c.detail);
        if let Some(f) = &c.fix
            && c.status != Status::Pass
        {
            println!("       {:<18} fix: {f}", "");
        }
    }
    println!(
        "{}: {} checks, {failed} failed, {warned} warnings",
        if failed == 0 { "OK" } else { "PROBLEMS FOUND" },
        checks.len()
    );
    if a.json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "status": c.status.label().to_lowercase(),
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        print_json(&json!({
            "ok": failed == 0,
            "failed": failed,
            "warnings": warned,
            "interface": a.interface,
            "group": group.to_string(),
            "checks": list,
        }));
    }
    if failed > 0 {
        Err(CliError::Failed(format!(
            "doctor: {failed} check(s) failed; see the fixes above"
        )))
    } else {
        Ok(())
    }
}

/// Join `group`, send a token to it and wait up to a second for it to come back.
fn loopback_test(
    group: SocketAddr,
    cfg: &SocketConfig,
    warnings: &mut Vec<String>,
    buffers: &mut Option<(usize, usize)>,
) -> Result<Duration, String> {
    let rx = open_multicast_receiver(group, cfg).map_err(|e| e.to_string())?;
    let tx = open_sender(group, cfg).map_err(|e| e.to_string())?;
    warnings.extend(rx.warnings.iter().map(|w| w.to_string()));
    warnings.extend(tx.warnings.iter().map(|w| w.to_string()));
    *buffers = Some((rx.buffers.recv, tx.buffers.send));
    let token = format!("nakcast-doctor-{}-{:?}", std::process::id(), Instant::now());
    let start = Instant::now();
    tx.socket
        .send(token.as_bytes())
        .map_err(|e| format!("sending to {group} failed: {e}"))?;
    let mut batch = RecvBatch::new(8, 2048);
    while start.elapsed() < Duration::from_secs(1) {
        match batch.recv(&rx.socket) {
            Ok(_) => {
                if batch
                    .iter()
                    .flatten()
                    .any(|d| d.payload == token.as_bytes())
                {
                    return Ok(start.elapsed());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(format!("receiving on {group} failed: {e}")),
        }
    }
    Err(format!(
        "a datagram sent to {group} did not come back within 1 s (joined on {})",
        cfg.interface
    ))
}
