//! The protocol core over thousands of simulated lossy networks.
//!
//! `NAKCAST_SIM_SEEDS=N` runs N seeds instead of the default (long soak runs);
//! `NAKCAST_SIM_SEED=S` runs only seed S (to reproduce a failure). The same scenarios run
//! with authenticated frames on (`scenario(seed, true)`) over fewer seeds by default
//! (`NAKCAST_SIM_AUTH_SEEDS=N` for more).

use std::time::Duration;

use nakcast::OwnedEvent;
use nakcast::proto::{
    AuthConfig, AuthKey, FlowControl, JoinPolicy, LossReason, PublisherConfig, ReceiverConfig,
};
use nakcast::sim::{GilbertElliott, LinkConfig, Sim, SimConfig, Workload};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Receivers that never give up while the publisher is alive: in these runs a `Loss` may
/// only come from data that left the ring, or from a publisher that is gone.
fn patient_receiver() -> ReceiverConfig {
    ReceiverConfig {
        max_nak_tries: 1000,
        loss_deadline: Duration::from_secs(100),
        ..ReceiverConfig::default()
    }
}

fn random_link(rng: &mut SmallRng, max_loss: f64) -> LinkConfig {
    let loss = rng.random_range(0.0..=max_loss);
    LinkConfig {
        loss,
        burst: rng.random_bool(0.5).then(|| GilbertElliott {
            enter_bad: rng.random_range(0.0..0.05),
            leave_bad: rng.random_range(0.2..0.8),
            loss_bad: rng.random_range(0.3..0.9),
        }),
        duplicate: if rng.random_bool(0.3) {
            rng.random_range(0.0..0.05)
        } else {
            0.0
        },
        delay: Duration::from_micros(rng.random_range(5..200)),
        jitter: if rng.random_bool(0.5) {
            Duration::from_micros(rng.random_range(1..300))
        } else {
            Duration::ZERO
        },
    }
}

/// Authentication for `seed`'s publishers and receivers: one shared key, or (in half the
/// seeds) a rotation caught half-way, publishers sealing with the old key and receivers
/// with the new one, each accepting the other's.
fn auth_pair(rng: &mut SmallRng) -> (AuthConfig, AuthConfig) {
    let old = AuthKey::new(rng.random(), rng.random());
    if rng.random_bool(0.5) {
        let cfg = AuthConfig {
            key: Some(old),
            ..AuthConfig::default()
        };
        return (cfg.clone(), cfg);
    }
    let new = AuthKey::new(old.id.wrapping_add(1), rng.random());
    let publisher = AuthConfig {
        key: Some(old.clone()),
        accept: vec![new.clone()],
        ..AuthConfig::default()
    };
    let receiver = AuthConfig {
        key: Some(new),
        accept: vec![old],
        ..AuthConfig::default()
    };
    (publisher, receiver)
}

/// A random scenario for `seed`, with authenticated frames if `auth`; `big_ring` makes the
/// ring larger than the whole run.
pub fn scenario(seed: u64, auth: bool) -> (SimConfig, bool) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5EED);
    let big_ring = rng.random_bool(0.5);
    let publishers = rng.random_range(1..=3);
    let workloads: Vec<Workload> = (0..publishers)
        .map(|_| Workload {
            messages: rng.random_range(50..400),
            interval: Duration::from_micros(rng.random_range(5..200)),
            burst: rng.random_range(1..8),
            min_size: 0,
            max_size: rng.random_range(1..300),
            large_fraction: if rng.random_bool(0.3) { 0.05 } else { 0.0 },
            large_size: rng.random_range(500..3000),
            start: Duration::from_micros(rng.random_range(0..2000)),
            linger: Duration::from_secs(2),
            restart_after: None,
        })
        .collect();
    let workloads: Vec<Workload> = workloads
        .into_iter()
        .map(|w| {
            let restart = rng
                .random_bool(0.15)
                .then(|| rng.random_range(0..w.messages));
            Workload {
                restart_after: restart,
                ..w
            }
        })
        .collect();
    // Drawn after everything else, so that `auth` changes nothing else about the scenario.
    let (pub_auth, recv_auth) = if auth {
        auth_pair(&mut SmallRng::seed_from_u64(seed ^ 0xA07))
    } else {
        Default::default()
    };
    // Flow control from its own stream too: any mode, and windows from a few frames (the
    // publisher held back all the time, reports lost on the return link) to the default.
    let mut flow_rng = SmallRng::seed_from_u64(seed ^ 0xF10);
    let flow_control = match flow_rng.random_range(0..3) {
        0 => FlowControl::None,
        1 => FlowControl::Max,
        _ => FlowControl::Min,
    };
    let flow_window = if flow_rng.random_bool(0.5) {
        flow_rng.random_range(2000..20_000)
    } else {
        ReceiverConfig::default().flow_window
    };
    let publisher = PublisherConfig {
        auth: pub_auth,
        flow_control,
        mtu: rng.random_range(300..1472),
        ring_bytes: if big_ring {
            1 << 22
        } else {
            rng.random_range(4096..32768)
        },
        ring_frames: if big_ring {
            1 << 16
        } else {
            rng.random_range(8..200)
        },
        ..PublisherConfig::default()
    };
    let max = publisher.clone().sanitized().max_message_size;
    let workloads = workloads
        .into_iter()
        .map(|w: Workload| Workload {
            large_size: w.large_size.min(max),
            max_size: w.max_size.min(max),
            ..w
        })
        .collect();
    let receiver = ReceiverConfig {
        join: if rng.random_bool(0.5) {
            JoinPolicy::FirstSeen
        } else {
            JoinPolicy::FromOldest
        },
        reorder_window: if rng.random_bool(0.2) { 16 } else { 4096 },
        auth: recv_auth,
        flow_window,
        ..patient_receiver()
    };
    let cfg = SimConfig {
        seed,
        publisher,
        receiver,
        workloads,
        receivers: rng.random_range(1..=20),
        uplink: random_link(&mut rng, 0.1),
        downlink: random_link(&mut rng, 0.3),
        return_link: random_link(&mut rng, 0.3),
        max_time: Duration::from_secs(120),
    };
    (cfg, big_ring)
}

fn seeds(var: &str, default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("NAKCAST_SIM_SEED") {
        return vec![s.parse().expect("NAKCAST_SIM_SEED is a number")];
    }
    let n = std::env::var(var).map_or(default, |s| s.parse().expect("a number"));
    (0..n).collect()
}

#[test]
fn clean_network_delivers_everything() {
    let mut sim = Sim::new(SimConfig {
        receivers: 3,
        ..SimConfig::default()
    });
    sim.run();
    sim.check().unwrap();
    for j in 0..3 {
        let s = sim.receiver(j).stats();
        assert_eq!(s.messages, 500, "{s:?}");
        assert_eq!(s.naks_sent, 0);
        assert_eq!(s.lost_fragments, 0);
        assert_eq!(s.closes, 1);
    }
}

#[test]
fn random_networks_deliver_published_minus_reported_loss() {
    check_scenarios(&seeds("NAKCAST_SIM_SEEDS", 1000), false);
}

/// The same property with every frame sealed and verified: the trailer's room per frame,
/// sealed NAKs and repairs, growing session ids across restarts, and key rotation.
#[test]
fn random_networks_with_authentication_deliver_published_minus_reported_loss() {
    check_scenarios(&seeds("NAKCAST_SIM_AUTH_SEEDS", 300), true);
}

fn check_scenarios(seeds: &[u64], auth: bool) {
    let mut total_lost = 0u64;
    let mut total_recovered = 0u64;
    let mut total_msgs = 0u64;
    let mut held = 0u64;
    for &seed in seeds {
        let (cfg, big_ring) = scenario(seed, auth);
        let mut sim = Sim::new(cfg.clone());
        sim.run();
        if let Err(e) = sim.check() {
            panic!("seed {seed}: {e}\nconfig: {cfg:#?}");
        }
        for i in 0..cfg.workloads.len() {
            assert_eq!(sim.publisher_auth_failures(i), 0, "seed {seed}");
            held += sim.publisher_flow_blocked(i);
        }
        for j in 0..sim.receiver_count() {
            let s = sim.receiver(j).stats();
            assert_eq!(s.auth_failures, 0, "seed {seed}: {s:?}");
            total_lost += s.lost_fragments;
            total_recovered += s.recovered;
            total_msgs += s.messages;
            if big_ring {
                // The ring outlives the run, so only a killed publisher can cause loss
                // (its unrepairable tail); a run without restarts loses nothing.
                let restarts = cfg.workloads.iter().any(|w| w.restart_after.is_some());
                for l in sim.log(j) {
                    if let OwnedEvent::Loss { reason, .. } = &l.event {
                        assert!(
                            restarts
                                && matches!(
                                    reason,
                                    LossReason::PublisherRestarted | LossReason::PublisherInactive
                                ),
                            "seed {seed}: {l:?}"
                        );
                    }
                }
            }
        }
    }
    println!(
        "auth {auth}: delivered {total_msgs} messages, recovered {total_recovered} fragments, \
         {total_lost} reported lost; flow control held publishers back {held} times"
    );
    assert!(total_msgs > 0);
    // Flow control really bound in these scenarios (windows of a few frames).
    assert!(seeds.len() < 50 || held > 0, "{held}");
}

/// The checker itself must catch each kind of violation, or the property test proves
/// nothing.
#[test]
fn checker_catches_every_kind_of_violation() {
    let cfg = SimConfig {
        receivers: 1,
        publisher: PublisherConfig {
            ring_frames: 16,
            ..PublisherConfig::default()
        },
        downlink: LinkConfig {
            loss: 0.2,
            ..LinkConfig::default()
        },
        // Half the NAKs lost: some data leaves the ring before its repair, so the log has
        // a loss to tamper with.
        return_link: LinkConfig {
            loss: 0.5,
            ..LinkConfig::default()
        },
        receiver: patient_receiver(),
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg);
    sim.run();
    sim.check().unwrap();
    let sessions = sim.sessions();
    let checker = nakcast::sim::Checker::new(&sessions);
    let log = sim.log(0).to_vec();
    let msg_at = log
        .iter()
        .position(|l| matches!(l.event, OwnedEvent::Message { .. }))
        .unwrap();
    let loss_at = log
        .iter()
        .position(|l| matches!(l.event, OwnedEvent::Loss { .. }))
        .expect("a loss");

    let mut dropped = log.clone();
    dropped.remove(msg_at);
    assert!(
        checker.check(0, &dropped).is_err(),
        "silently missing message"
    );

    let mut dup = log.clone();
    dup.insert(msg_at, log[msg_at].clone());
    assert!(checker.check(0, &dup).is_err(), "duplicate");

    let mut corrupt = log.clone();
    if let OwnedEvent::Message { payload, .. } = &mut corrupt[msg_at].event {
        payload.push(0);
    }
    assert!(checker.check(0, &corrupt).is_err(), "corrupt payload");

    let mut swapped = log.clone();
    let next = msg_at
        + 1
        + swapped[msg_at + 1..]
            .iter()
            .position(|l| matches!(l.event, OwnedEvent::Message { .. }))
            .unwrap();
    swapped.swap(msg_at, next);
    assert!(checker.check(0, &swapped).is_err(), "out of order");

    let mut early = log.clone();
    early[loss_at].at = Duration::ZERO;
    assert!(
        checker.check(0, &early).is_err(),
        "loss reported while the data was retained"
    );

    let mut unreported = log.clone();
    unreported.remove(loss_at);
    assert!(checker.check(0, &unreported).is_err(), "loss not reported");
}
