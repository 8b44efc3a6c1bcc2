//! Steady-state publish and receive allocate nothing: a counting global allocator watches
//! `offer` + `poll` on both sides over real loopback multicast sockets, without and with
//! authenticated frames (sealing and checking MACs must not allocate either).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nakcast::proto::AuthConfig;
use nakcast::{
    Channel, Event, Interface, Publisher, PublisherOptions, Subscriber, SubscriberOptions,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn offer_and_poll_allocate_nothing_in_steady_state() {
    // One after the other: the allocation counter is global.
    run(AuthConfig::default());
    run(AuthConfig::with_key(1, [0x33; 32]));
}

fn run(auth: AuthConfig) {
    ALLOCS.store(0, Ordering::SeqCst);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ch = Channel::new(format!("239.255.200.9:{port}").parse().unwrap())
        .with_interface(Interface::Addr("127.0.0.1".parse().unwrap()));
    let mut sub_opts = SubscriberOptions::new(ch.clone());
    sub_opts.protocol.auth = auth.clone();
    let mut sub = Subscriber::new(sub_opts).unwrap();
    let mut pub_opts = PublisherOptions::new(ch);
    pub_opts.protocol.auth = auth.clone();
    let mut publisher = Publisher::new(pub_opts).unwrap();
    let msg = [7u8; 64];
    let big = [9u8; 5000];
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut step = |n: u64, publisher: &mut Publisher, sub: &mut Subscriber, received: &mut u64| {
        for k in 0..n {
            // Small messages at once (latency path), fragmented ones now and then.
            let m: &[u8] = if k % 100 == 99 { &big } else { &msg };
            publisher.offer(m).unwrap();
            publisher.poll().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let before = *received;
            while *received == before {
                sub.poll(
                    &mut |e| {
                        if let Event::Message { payload, .. } = e {
                            *received += 1;
                            bytes += payload.len() as u64;
                        }
                    },
                    64,
                )
                .unwrap();
                assert!(Instant::now() < deadline, "message {k} not received");
            }
        }
    };
    // Bursts through the throughput path: natural batching with `offer_deferred` (full
    // frames encoded straight into the send batch, `sendmmsg`), then a flush.
    let burst =
        |rounds: u64, publisher: &mut Publisher, sub: &mut Subscriber, received: &mut u64| {
            for _ in 0..rounds {
                for _ in 0..100 {
                    publisher.offer_deferred(&msg).unwrap();
                }
                publisher.flush();
                let deadline = Instant::now() + Duration::from_secs(5);
                let want = *received + 100;
                while *received < want {
                    sub.poll(
                        &mut |e| {
                            if let Event::Message { .. } = e {
                                *received += 1;
                            }
                        },
                        64,
                    )
                    .unwrap();
                    assert!(Instant::now() < deadline, "burst not received");
                }
            }
        };
    // Warm up: buffers reach their working sizes.
    step(2_000, &mut publisher, &mut sub, &mut received);
    burst(20, &mut publisher, &mut sub, &mut received);
    COUNTING.store(true, Ordering::SeqCst);
    step(20_000, &mut publisher, &mut sub, &mut received);
    burst(200, &mut publisher, &mut sub, &mut received);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    // The counter does count: one deliberate allocation shows up.
    drop(std::hint::black_box(vec![1u8; 16]));
    assert_eq!(ALLOCS.load(Ordering::SeqCst), allocs + 1);
    COUNTING.store(false, Ordering::SeqCst);
    println!(
        "auth {}: {allocs} allocations over 40,000 messages ({received} received)",
        auth.is_on()
    );
    assert_eq!(received, 22_000 + 2_000 + 20_000);
    assert_eq!(allocs, 0, "steady-state offer + poll allocated");
    assert_eq!(sub.stats().auth_failures, 0);
}
