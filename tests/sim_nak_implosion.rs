//! NAK implosion: many receivers sharing every loss must not flood the publisher with NAKs
//! nor make it repair the same data many times.

use std::time::Duration;

use nakcast::proto::{PublisherConfig, ReceiverConfig};
use nakcast::sim::{LinkConfig, Sim, SimConfig, Workload};

#[test]
fn hundred_receivers_sharing_every_loss() {
    let receivers = 100;
    let mut naks = 0u64;
    let mut repairs = 0u64;
    let mut lost = 0u64;
    for seed in 0..5 {
        let cfg = SimConfig {
            seed,
            publisher: PublisherConfig::default(),
            receiver: ReceiverConfig::for_group(receivers as u32, Duration::from_micros(90)),
            workloads: vec![Workload {
                messages: 2000,
                interval: Duration::from_micros(50),
                ..Workload::default()
            }],
            receivers,
            // Loss only at the publisher's side: every receiver misses the same frames.
            uplink: LinkConfig {
                loss: 0.05,
                ..LinkConfig::default()
            },
            downlink: LinkConfig {
                delay: Duration::from_micros(40),
                jitter: Duration::from_micros(10),
                ..LinkConfig::default()
            },
            return_link: LinkConfig {
                delay: Duration::from_micros(40),
                jitter: Duration::from_micros(10),
                ..LinkConfig::default()
            },
            max_time: Duration::from_secs(30),
        };
        let mut sim = Sim::new(cfg);
        sim.run();
        sim.check().unwrap();
        naks += sim.naks_delivered[0];
        lost += sim.uplink_drops[0];
        repairs += sim.publisher_retransmits(0);
        for j in 0..receivers {
            assert_eq!(sim.receiver(j).stats().lost_fragments, 0);
        }
    }
    let naks_per_loss = naks as f64 / lost as f64;
    let repairs_per_loss = repairs as f64 / lost as f64;
    println!(
        "{receivers} receivers: {lost} datagrams lost at the publisher, {naks} NAKs received \
         ({naks_per_loss:.2} per lost datagram), {repairs} retransmissions ({repairs_per_loss:.2} per lost datagram)"
    );
    assert!(naks_per_loss <= 2.0, "{naks_per_loss}");
    assert!(repairs_per_loss <= 1.2, "{repairs_per_loss}");
}
