//! Threading conveniences: background drivers and an owned-event iterator.
//!
//! The lowest latency comes from driving a [`Publisher`] or [`Subscriber`] yourself on a
//! dedicated (ideally pinned) core with a busy-spinning loop: no locks, no handoff, no
//! allocation. These helpers trade a little of that for convenience:
//! - [`Subscriber::spawn`] runs the receive loop on its own thread and calls your handler
//!   there (no lock: the thread owns the subscriber).
//! - [`Publisher::spawn`] serves NAKs and heartbeats on a background thread; `offer` takes a
//!   mutex shared with it (uncontended most of the time, but a lock on the hot path).
//! - [`Subscriber::events`] yields owned events (one allocation per message).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::Error;
use super::idle::{IdleStrategy, Idler};
use super::publisher::Publisher;
use super::subscriber::Subscriber;
use crate::proto::publisher::OfferError;
use crate::proto::receiver::{Event, OwnedEvent};

/// A subscriber running on its own thread; stop it to get it back.
///
/// ```
/// # use nakcast::{Event, IdleStrategy, OwnedEvent, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
/// # use std::time::Duration;
/// # let channel = nakcast::transport::doc_channel();
/// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
/// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// let running = sub.spawn(IdleStrategy::Block, move |event| {
///     if let Event::Message { payload, .. } = event { tx.send(payload.to_vec()).unwrap() }
/// });
/// # publisher.offer(b"hello")?;
/// assert_eq!(rx.recv_timeout(Duration::from_secs(5))?, b"hello");
/// let sub = running.stop()?; // or drop `running` to stop it
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SubscriberThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Subscriber, Error>>>,
}

impl SubscriberThread {
    /// Stop the thread after its current duty cycle and return the subscriber (or the
    /// error that stopped it).
    ///
    /// ```
    /// # use nakcast::{Event, IdleStrategy, OwnedEvent, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// let running = sub.spawn(IdleStrategy::DEFAULT_BACKOFF, |_| {});
    /// # publisher.offer(b"hello")?;
    /// # std::thread::sleep(Duration::from_millis(5));
    /// let sub = running.stop()?;
    /// println!("{} messages received on the thread", sub.stats().messages);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(mut self) -> Result<Subscriber, Error> {
        self.stop.store(true, Ordering::Release);
        let t = self.thread.take().expect("joined once");
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for SubscriberThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Subscriber {
    /// Move the subscriber to a new thread that polls it with `idle` between empty duty
    /// cycles and calls `handler` for every event, on that thread.
    ///
    /// ```
    /// # use nakcast::{Event, IdleStrategy, OwnedEvent, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let running = sub.spawn(IdleStrategy::Yield, move |event| {
    ///     if let Event::Message { seq, .. } = event { tx.send(seq).unwrap() }
    /// });
    /// # publisher.offer(b"hello")?;
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(5))?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F>(mut self, idle: IdleStrategy, mut handler: F) -> SubscriberThread
    where
        F: FnMut(Event<'_>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nakcast-sub".into())
            .spawn(move || {
                let mut idler = Idler::default();
                while !flag.load(Ordering::Acquire) {
                    let work = if idle == IdleStrategy::Block {
                        self.recv_timeout(&mut handler, Duration::from_millis(10))?
                    } else {
                        self.poll(&mut handler, 256)?
                    };
                    idler.idle(idle, work);
                }
                Ok(self)
            })
            .expect("spawn subscriber thread");
        SubscriberThread {
            stop,
            thread: Some(thread),
        }
    }

    /// An iterator of owned events that blocks up to `timeout` for each; it ends after
    /// `timeout` passes with no event. Allocates per message: a convenience, not the fast
    /// path.
    ///
    /// ```
    /// # use nakcast::{Event, IdleStrategy, OwnedEvent, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// # publisher.offer(b"hello")?;
    /// let first = sub.events(Duration::from_secs(1)).find_map(|event| match event {
    ///     OwnedEvent::Message { payload, .. } => Some(payload),
    ///     _ => None, // Joined, Loss, ...
    /// });
    /// assert_eq!(first.as_deref(), Some(&b"hello"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn events(&mut self, timeout: Duration) -> EventIter<'_> {
        EventIter {
            sub: self,
            timeout,
            queue: VecDeque::new(),
            error: None,
        }
    }
}

/// Iterator returned by [`Subscriber::events`].
///
/// ```
/// # use nakcast::{Event, IdleStrategy, OwnedEvent, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
/// # use std::time::Duration;
/// # let channel = nakcast::transport::doc_channel();
/// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
/// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
/// # publisher.offer(b"hello")?;
/// for event in sub.events(Duration::from_millis(20)) { // ends after 20 ms without an event
///     println!("{event:?}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EventIter<'a> {
    sub: &'a mut Subscriber,
    timeout: Duration,
    queue: VecDeque<OwnedEvent>,
    error: Option<Error>,
}

impl EventIter<'_> {
    /// The socket error that ended the iteration, if any.
    ///
    /// ```
    /// # use nakcast::{Event, IdleStrategy, OwnedEvent, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// let mut events = sub.events(Duration::from_millis(1));
    /// for event in events.by_ref() {
    ///     println!("{event:?}");
    /// }
    /// if let Some(e) = events.error() { eprintln!("stopped by a socket error: {e}") }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

impl Iterator for EventIter<'_> {
    type Item = OwnedEvent;

    fn next(&mut self) -> Option<OwnedEvent> {
        let deadline = Instant::now() + self.timeout;
        while self.queue.is_empty() && self.error.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let queue = &mut self.queue;
            if let Err(e) = self
                .sub
                .recv_timeout(&mut |e| queue.push_back(e.into()), left)
            {
                self.error = Some(e);
            }
        }
        self.queue.pop_front()
    }
}

/// A publisher shared with a background thread that serves NAKs and heartbeats.
///
/// Clone it to offer from several threads; every call takes the publisher's mutex.
///
/// ```
/// # use nakcast::{IdleStrategy, OfferError, Publisher, PublisherOptions};
/// # use std::time::Duration;
/// # let channel = nakcast::transport::doc_channel();
/// # let publisher = Publisher::new(PublisherOptions::new(channel))?;
/// let shared = publisher.spawn(IdleStrategy::DEFAULT_BACKOFF);
/// let other = shared.clone();
/// std::thread::spawn(move || other.offer(b"from another thread")).join().unwrap()?;
/// shared.close(Duration::from_millis(10))?; // stops the thread
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedPublisher {
    inner: Arc<Mutex<Publisher>>,
    stop: Arc<AtomicBool>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Publisher {
    /// Serve NAKs and heartbeats on a background thread (polling with `idle` between empty
    /// duty cycles; `Backoff` is the sensible choice, as every poll takes the lock).
    /// [`SharedPublisher::close`] ends it cleanly; dropping every handle without closing
    /// also ends it (within one idle period), but sends no CLOSE: receivers then report
    /// the publisher inactive after their `inactivity_timeout`.
    ///
    /// ```
    /// # use nakcast::{IdleStrategy, OfferError, Publisher, PublisherOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// let shared = publisher.spawn(IdleStrategy::DEFAULT_BACKOFF); // NAKs served meanwhile
    /// shared.offer(b"hello")?;
    /// shared.close(Duration::from_millis(10))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn(self, idle: IdleStrategy) -> SharedPublisher {
        let inner = Arc::new(Mutex::new(self));
        let stop = Arc::new(AtomicBool::new(false));
        // A weak reference: once every handle is dropped, the publisher goes with them and
        // the thread ends instead of serving a publisher nobody can reach.
        let (p, flag) = (Arc::downgrade(&inner), stop.clone());
        let thread = std::thread::Builder::new()
            .name("nakcast-pub".into())
            .spawn(move || {
                let mut idler = Idler::default();
                while !flag.load(Ordering::Acquire) {
                    let Some(p) = p.upgrade() else { break };
                    let work = lock(&p).poll().unwrap_or(0);
                    drop(p);
                    let idle = if idle == IdleStrategy::Block {
                        IdleStrategy::DEFAULT_BACKOFF
                    } else {
                        idle
                    };
                    idler.idle(idle, work);
                }
            })
            .expect("spawn publisher thread");
        SharedPublisher {
            inner,
            stop,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }
}

fn lock(p: &Mutex<Publisher>) -> MutexGuard<'_, Publisher> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedPublisher {
    /// [`Publisher::offer`] under the lock.
    ///
    /// ```
    /// # use nakcast::{IdleStrategy, OfferError, Publisher, PublisherOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// # let shared = publisher.spawn(IdleStrategy::DEFAULT_BACKOFF);
    /// let seq = shared.offer(b"hello")?;
    /// assert_eq!(shared.offer(b"world")?, seq + 1);
    /// # shared.close(Duration::ZERO)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offer(&self, msg: &[u8]) -> Result<u64, OfferError> {
        lock(&self.inner).offer(msg)
    }

    /// Run `f` with the publisher locked (counters, flush, deferred offers).
    ///
    /// ```
    /// # use nakcast::{IdleStrategy, OfferError, Publisher, PublisherOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// # let shared = publisher.spawn(IdleStrategy::DEFAULT_BACKOFF);
    /// shared.with(|p| {
    ///     p.offer_deferred(b"one")?;
    ///     p.offer_deferred(b"two")?;
    ///     p.flush();
    ///     Ok::<_, OfferError>(())
    /// })?;
    /// assert_eq!(shared.with(|p| p.stats().messages), 2);
    /// # shared.close(Duration::ZERO)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with<R>(&self, f: impl FnOnce(&mut Publisher) -> R) -> R {
        f(&mut lock(&self.inner))
    }

    /// Stop the background thread and close the publisher, serving NAKs for `linger`.
    ///
    /// ```
    /// # use nakcast::{IdleStrategy, OfferError, Publisher, PublisherOptions};
    /// # use std::time::Duration;
    /// # let channel = nakcast::transport::doc_channel();
    /// # let publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// # let shared = publisher.spawn(IdleStrategy::DEFAULT_BACKOFF);
    /// shared.offer(b"last words")?;
    /// shared.close(Duration::from_millis(10))?;
    /// assert!(matches!(shared.offer(b"too late"), Err(OfferError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self, linger: Duration) -> Result<(), Error> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
        lock(&self.inner).close(linger)
    }
}
