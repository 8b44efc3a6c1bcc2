//! Batched datagram I/O without per-datagram heap allocation.
//!
//! [`RecvBatch`] and [`SendBatch`] own all their memory (payload buffers,
//! `iovec`s, `sockaddr_storage`s and, on Linux, `mmsghdr`s), allocated once in
//! `new`. On Linux/Android a whole batch moves with one `recvmmsg(2)` /
//! `sendmmsg(2)`; elsewhere (and through [`RecvBatch::recv_each`] /
//! [`SendBatch::send_each`] everywhere) one `recvmsg(2)`/`sendto(2)` per
//! datagram is used with the same buffers.
//!
//! Pointer discipline: the raw pointers handed to the kernel (buffer bases,
//! iovec and sockaddr addresses) are rebuilt from the owning boxed slices at
//! the start of every call and only used during that call. The boxed slices are
//! never reallocated after `new`, but correctness does not depend on it: no
//! pointer is kept across calls, so none can dangle.

use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::ptr;

/// Default number of datagrams per batch.
pub const DEFAULT_BATCH: usize = 32;
/// Default per-datagram buffer size in bytes.
pub const DEFAULT_DATAGRAM_CAPACITY: usize = 2048;
/// Upper bound on batch length (the kernel's `UIO_MAXIOV`, the `vlen` cap of
/// `recvmmsg`/`sendmmsg`).
pub const MAX_BATCH: usize = 1024;

#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

const STORAGE_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value
    // (family AF_UNSPEC).
    unsafe { mem::zeroed() }
}

/// Writes `addr` into `out` in C layout and returns the length to pass to the
/// kernel.
fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    *out = zeroed_storage();
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is at least as large and as aligned as
            // sockaddr_in (that is its purpose), and `out` is an exclusive
            // reference, so viewing it as a sockaddr_in is sound.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a kernel-filled `sockaddr_storage`. Unknown families (never produced
/// for UDP/IP sockets) map to `0.0.0.0:0`.
fn read_sockaddr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> SocketAddr {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: family AF_INET and length checked; storage is aligned
            // and large enough for sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family AF_INET6 and length checked; storage is aligned
            // and large enough for sockaddr_in6.
            let sin6 =
                unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            ))
        }
        _ => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    }
}

fn check_dims(count: usize, datagram_capacity: usize) {
    assert!(
        (1..=MAX_BATCH).contains(&count),
        "batch length must be in 1..={MAX_BATCH}, got {count}"
    );
    assert!(datagram_capacity > 0, "datagram capacity must be > 0");
    assert!(
        count.checked_mul(datagram_capacity).is_some(),
        "batch too large"
    );
}

// ---------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------

/// One whole datagram from a [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Sender's address (for multicast: the sender socket's local address).
    pub source: SocketAddr,
    /// Payload, complete.
    pub payload: &'a [u8],
}

/// A datagram that did not fit in its buffer; its payload is not exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// Sender's address.
    pub source: SocketAddr,
    /// Original datagram length on Linux/Android (where `MSG_TRUNC` reports
    /// it); elsewhere only the buffer size is known and this equals
    /// `capacity`.
    pub len: usize,
    /// Size of the buffer it was received into.
    pub capacity: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagram from {} truncated: {} bytes into a {}-byte buffer; increase the receive \
             datagram capacity or lower the sender's maximum datagram size",
            self.source, self.len, self.capacity
        )
    }
}

impl std::error::Error for Truncated {}

#[derive(Debug, Clone, Copy, Default)]
struct RecvSlot {
    /// Bytes reported by the kernel (original length when truncated on Linux).
    len: usize,
    addr_len: libc::socklen_t,
    truncated: bool,
    /// Coalesced receive (UDP GRO): the size of each datagram in the buffer but the last,
    /// which may be shorter. 0: the buffer holds one datagram.
    segment: usize,
}

impl RecvSlot {
    /// Datagrams this buffer holds.
    fn datagrams(&self) -> usize {
        if self.truncated || self.segment == 0 || self.len == 0 {
            1
        } else {
            self.len.div_ceil(self.segment)
        }
    }
}

/// The smallest per-buffer capacity that can take a coalesced receive
/// ([`RecvBatch::set_coalescing`]): the largest UDP payload.
pub const COALESCED_CAPACITY: usize = 65_535;

/// `UDP_GRO` from `linux/udp.h` (level `SOL_UDP`): receive coalescing on a socket, and the
/// control message giving the size of the coalesced datagrams. The `libc` crate defines it
/// only for some C libraries.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UDP_GRO: libc::c_int = 104;

/// Bytes of a receive control buffer: room for a `UDP_GRO` message after any others the
/// socket's options add before it (timestamps take up to 32 bytes each).
#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_CMSG_LEN: usize = 128;

/// A receive control buffer, aligned for `cmsghdr`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct RecvCmsg([u8; RECV_CMSG_LEN]);

/// The segment size in a received `UDP_GRO` control message, or 0 if there is none.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn gro_segment(hdr: &libc::msghdr) -> usize {
    // SAFETY: CMSG_LEN only computes a length.
    let min_len = unsafe { libc::CMSG_LEN(mem::size_of::<libc::c_int>() as _) } as usize;
    let mut segment = 0;
    // SAFETY: `hdr` names a control buffer owned by the batch, and the kernel set
    // `msg_controllen` to what it wrote there (at most the buffer's size), so CMSG_FIRSTHDR
    // and CMSG_NXTHDR return headers inside it or null; a header's payload may be
    // unaligned, hence read_unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == UDP_GRO
                && (*c).cmsg_len as usize >= min_len
            {
                let v = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                segment = usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    segment
}

/// A preallocated batch of receive buffers.
///
/// ```no_run
/// # use nakcast::transport::batch::RecvBatch;
/// # fn f(sock: &std::net::UdpSocket) -> std::io::Result<()> {
/// let mut batch = RecvBatch::new(32, 2048);
/// match batch.recv(sock) {
///     Ok(_) => {
///         for d in batch.iter() {
///             match d {
///                 Ok(d) => println!("{} bytes from {}", d.payload.len(), d.source),
///                 Err(t) => eprintln!("{t}"),
///             }
///         }
///     }
///     Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub struct RecvBatch {
    /// `count * cap` bytes; slot `i` is `buf[i*cap..(i+1)*cap]`.
    buf: Box<[u8]>,
    cap: usize,
    addrs: Box<[libc::sockaddr_storage]>,
    slots: Box<[RecvSlot]>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    iovecs: Box<[libc::iovec]>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    hdrs: Box<[libc::mmsghdr]>,
    /// One control-message buffer per slot (coalesced receives).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    cmsgs: Box<[RecvCmsg]>,
    /// Receive coalescing is on ([`RecvBatch::set_coalescing`]).
    coalesce: bool,
    /// Buffers filled by the last receive.
    filled: usize,
    /// Datagrams held from the last receive (more than `filled` when coalesced).
    datagrams: usize,
    truncated_total: u64,
    /// The last adaptive receive found data: the next one tries a whole batch.
    bursting: bool,
}

// SAFETY: the only non-Send fields are the raw pointers inside `iovecs` and
// `hdrs`. They point exclusively into heap memory owned by this same value, are
// rewritten before every system call and never dereferenced by Rust code, so
// moving the value to another thread cannot create shared mutable aliasing.
unsafe impl Send for RecvBatch {}
// SAFETY: `&RecvBatch` only permits reading the payload buffers and metadata;
// the raw pointers are used solely through `&mut self` methods.
unsafe impl Sync for RecvBatch {}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("batch", &self.slots.len())
            .field("datagram_capacity", &self.cap)
            .field("filled", &self.filled)
            .field("truncated_total", &self.truncated_total)
            .finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new(DEFAULT_BATCH, DEFAULT_DATAGRAM_CAPACITY)
    }
}

impl RecvBatch {
    /// Allocates `count` buffers of `datagram_capacity` bytes each, plus all
    /// the headers. This is the only allocation the batch ever makes.
    ///
    /// # Panics
    /// If `count` is 0 or above [`MAX_BATCH`], or `datagram_capacity` is 0.
    pub fn new(count: usize, datagram_capacity: usize) -> Self {
        check_dims(count, datagram_capacity);
        RecvBatch {
            buf: vec![0u8; count * datagram_capacity].into_boxed_slice(),
            cap: datagram_capacity,
            addrs: vec![zeroed_storage(); count].into_boxed_slice(),
            slots: vec![RecvSlot::default(); count].into_boxed_slice(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            iovecs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ]
            .into_boxed_slice(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // SAFETY: mmsghdr is plain old data (integers and raw pointers);
            // all-zero (null pointers, zero lengths) is a valid value.
            hdrs: (0..count)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            cmsgs: vec![RecvCmsg([0; RECV_CMSG_LEN]); count].into_boxed_slice(),
            coalesce: false,
            filled: 0,
            datagrams: 0,
            truncated_total: 0,
            bursting: false,
        }
    }

    /// Buffers per receive call: the most datagrams one call takes, unless coalesced
    /// receives ([`set_coalescing`](Self::set_coalescing)) put several in one buffer.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Buffers the last receive filled (at most [`capacity`](Self::capacity); all of them
    /// suggests more is waiting in the socket).
    pub fn buffers_used(&self) -> usize {
        self.filled
    }

    /// Receive coalescing (UDP GRO, Linux 5.0+) on `socket` for this batch: a burst of
    /// datagrams of one size from one sender, e.g. one segmentation-offload send, arrives
    /// in one buffer, and [`iter`](Self::iter) hands out the same separate datagrams. It
    /// saves the kernel splitting the burst and queueing each datagram. Needs buffers of
    /// at least [`COALESCED_CAPACITY`] bytes (`InvalidInput` otherwise); fails, leaving it
    /// off, where the kernel has no UDP GRO. It is a setting of the socket: any other
    /// reader of it (or this batch after turning it off, for what is already queued) gets
    /// coalesced buffers too. A coalesced buffer whose control message was cut short
    /// (`MSG_CTRUNC`) is reported as [`Truncated`].
    ///
    /// ```
    /// # use nakcast::transport::batch::{RecvBatch, COALESCED_CAPACITY};
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let mut batch = RecvBatch::new(32, COALESCED_CAPACITY);
    /// if batch.set_coalescing(&socket, true).is_ok() {
    ///     assert!(batch.coalescing());
    /// }
    /// assert!(RecvBatch::new(32, 2048).set_coalescing(&socket, true).is_err()); // too small
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_coalescing<S: AsFd>(&mut self, socket: &S, on: bool) -> io::Result<()> {
        if on && self.cap < COALESCED_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "coalesced receives need buffers of {COALESCED_CAPACITY} bytes, not {}",
                    self.cap
                ),
            ));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let v = libc::c_int::from(on);
            // SAFETY: setsockopt on a live descriptor with a pointer to an int and its size.
            let r = unsafe {
                libc::setsockopt(
                    socket.as_fd().as_raw_fd(),
                    libc::SOL_UDP,
                    UDP_GRO,
                    (&v as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            self.coalesce = on;
            Ok(())
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = socket;
            if on {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "coalesced receives need Linux",
                ));
            }
            Ok(())
        }
    }

    /// Whether receive coalescing is on (see [`set_coalescing`](Self::set_coalescing)).
    pub fn coalescing(&self) -> bool {
        self.coalesce
    }

    /// Bytes available per datagram; larger datagrams are reported as
    /// [`Truncated`].
    pub fn datagram_capacity(&self) -> usize {
        self.cap
    }

    /// Number of datagrams (whole or truncated) held from the last receive.
    pub fn len(&self) -> usize {
        self.datagrams
    }

    /// `true` if the last receive produced nothing.
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// Total truncated datagrams seen by this batch since creation.
    pub fn truncated_total(&self) -> u64 {
        self.truncated_total
    }

    /// Datagram `i` of the last receive: `Ok` if whole, `Err` if it was
    /// truncated. `None` if `i >= len()`. Walks the batch from the start (coalesced
    /// buffers hold a varying number): use [`iter`](Self::iter) to visit them all.
    pub fn get(&self, i: usize) -> Option<Result<Datagram<'_>, Truncated>> {
        self.iter().nth(i)
    }

    /// Iterates over the datagrams of the last receive, in arrival order (a coalesced
    /// buffer as the separate datagrams it holds).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<Datagram<'_>, Truncated>> + '_ {
        Datagrams {
            batch: self,
            slot: 0,
            offset: 0,
            left: self.datagrams,
        }
    }
    /// Receives up to [`capacity`](Self::capacity) buffers without
    /// blocking, replacing the previous contents: as many datagrams, or up to 64
    /// per buffer when coalescing ([`set_coalescing`](Self::set_coalescing)).
    ///
    /// Adaptive: while the socket is idle, one `recvmsg(2)` per call (the
    /// cheapest system call for the next lone datagram, which is what a
    /// latency-bound subscriber waits for); after a datagram arrived, one
    /// `recvmmsg(2)` for the whole batch, as long as calls keep returning more
    /// than one. So a busy stream moves in batches and a ping-pong pays no
    /// batching overhead. Returns the number held (`>= 1`), or
    /// `Err(WouldBlock)` if nothing was queued. Works on blocking and
    /// non-blocking sockets alike (`std`, `mio` or `socket2`).
    pub fn recv<S: AsFd>(&mut self, socket: &S) -> io::Result<usize> {
        self.recv_at_most(socket, self.slots.len())
    }

    /// Like [`recv`](Self::recv), but fills at most `max` buffers (and at least one: `max`
    /// is raised to 1), i.e. at most `max` datagrams unless coalescing. For a reader that
    /// budgets its intake and leaves the rest in the socket.
    pub fn recv_at_most<S: AsFd>(&mut self, socket: &S, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, self.slots.len());
        if !self.bursting || max == 1 {
            let r = self.recv_up_to(socket, 1);
            self.bursting = r.is_ok();
            return r;
        }
        let r = self.recv_batch_of(socket, max);
        self.bursting = matches!(r, Ok(n) if n > 1);
        r
    }

    /// Receives up to [`capacity`](Self::capacity) datagrams with one
    /// `recvmmsg(2)` on Linux/Android (otherwise [`recv_each`](Self::recv_each)).
    pub fn recv_batch<S: AsFd>(&mut self, socket: &S) -> io::Result<usize> {
        self.recv_batch_of(socket, self.slots.len())
    }

    fn recv_batch_of<S: AsFd>(&mut self, socket: &S, max: usize) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.recv_mmsg(socket.as_fd().as_raw_fd(), max)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            self.recv_up_to(socket, max)
        }
    }

    fn finish_slot(
        &mut self,
        i: usize,
        len: usize,
        addr_len: libc::socklen_t,
        msg_flags: i32,
        segment: usize,
    ) {
        // A coalesced buffer whose control messages did not all fit may have lost its
        // segment size: handing it out as one datagram would be wrong, so it counts as
        // truncated.
        let truncated = (msg_flags & libc::MSG_TRUNC) != 0
            || len > self.cap
            || (self.coalesce && (msg_flags & libc::MSG_CTRUNC) != 0);
        self.truncated_total += u64::from(truncated);
        let slot = RecvSlot {
            len,
            addr_len,
            truncated,
            segment,
        };
        self.datagrams += slot.datagrams();
        self.slots[i] = slot;
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recv_mmsg(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        self.filled = 0;
        self.datagrams = 0;
        let n = max.min(self.slots.len());
        let cap = self.cap;
        // Pointers are derived afresh from the owning boxes on every call, in
        // an order such that no later safe access invalidates an earlier
        // pointer: buffer base, then iovecs (written, then pointer taken), then
        // addrs pointer, then hdrs (written, then pointer taken).
        let base = self.buf.as_mut_ptr();
        for (i, iov) in self.iovecs.iter_mut().enumerate().take(n) {
            // SAFETY: i < n, so i*cap + cap <= buf.len(): the pointer stays in
            // bounds of the buffer allocation.
            iov.iov_base = unsafe { base.add(i * cap) }.cast();
            iov.iov_len = cap;
        }
        let iov_ptr = self.iovecs.as_mut_ptr();
        let addr_ptr = self.addrs.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate().take(n) {
            // SAFETY: i < n == iovecs.len() == addrs.len(): in-bounds offsets.
            let (iov, name) = unsafe { (iov_ptr.add(i), addr_ptr.add(i)) };
            h.msg_hdr.msg_name = name.cast();
            h.msg_hdr.msg_namelen = STORAGE_LEN;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        if self.coalesce {
            for (h, c) in self.hdrs.iter_mut().zip(self.cmsgs.iter_mut()).take(n) {
                h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = c.0.len() as _;
            }
        }
        let hdr_ptr = self.hdrs.as_mut_ptr();
        let r = loop {
            // SAFETY: `hdr_ptr` points to `n` initialised mmsghdrs; each
            // references one iovec covering exactly its `cap`-byte slot of
            // `buf` and one sockaddr_storage of STORAGE_LEN bytes. All of that
            // memory is owned by `self`, which is exclusively borrowed for the
            // whole call, so nothing else aliases it and it cannot be freed or
            // moved while the kernel writes; so is the control buffer each names
            // when coalescing. A null timeout is allowed.
            let r =
                unsafe { libc::recvmmsg(fd, hdr_ptr, n as _, RECV_FLAGS as _, ptr::null_mut()) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            break r as usize;
        };
        for i in 0..r {
            let h = &self.hdrs[i];
            let (len, alen, flags) = (
                h.msg_len as usize,
                h.msg_hdr.msg_namelen,
                h.msg_hdr.msg_flags,
            );
            let segment = if self.coalesce {
                gro_segment(&h.msg_hdr)
            } else {
                0
            };
            self.finish_slot(i, len, alen, flags, segment);
        }
        self.filled = r;
        Ok(self.datagrams)
    }

    /// Like [`recv`](Self::recv) but with one `recvmsg(2)` system call per
    /// datagram (the portable fallback; also useful for comparison).
    ///
    /// Stops at the first `WouldBlock`; an error after at least one datagram
    /// was received is dropped in favour of returning what was received.
    pub fn recv_each<S: AsFd>(&mut self, socket: &S) -> io::Result<usize> {
        self.recv_up_to(socket, self.slots.len())
    }

    fn recv_up_to<S: AsFd>(&mut self, socket: &S, limit: usize) -> io::Result<usize> {
        let fd = socket.as_fd().as_raw_fd();
        self.filled = 0;
        self.datagrams = 0;
        let cap = self.cap;
        let base = self.buf.as_mut_ptr();
        let addr_ptr = self.addrs.as_mut_ptr();
        let mut i = 0;
        while i < limit.min(self.slots.len()) {
            let mut iov = libc::iovec {
                // SAFETY: i < count, so the slot lies within `buf`.
                iov_base: unsafe { base.add(i * cap) }.cast(),
                iov_len: cap,
            };
            // SAFETY: msghdr is plain old data; zero is a valid initial value
            // (also covers platform-specific padding fields).
            let mut h: libc::msghdr = unsafe { mem::zeroed() };
            // SAFETY: i < count == addrs.len().
            h.msg_name = unsafe { addr_ptr.add(i) }.cast();
            h.msg_namelen = STORAGE_LEN;
            h.msg_iov = &mut iov;
            h.msg_iovlen = 1;
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if self.coalesce {
                h.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
                h.msg_controllen = self.cmsgs[i].0.len() as _;
            }
            // SAFETY: `h` points to a live stack iovec covering slot `i` of
            // `buf`, to `addrs[i]` and, when coalescing, to `cmsgs[i]`; all are
            // owned by `self`, exclusively borrowed for this call, and outlive
            // the system call.
            let r = unsafe { libc::recvmsg(fd, &mut h, RECV_FLAGS) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    _ if i > 0 => break,
                    _ => return Err(e),
                }
            }
            let (alen, flags) = (h.msg_namelen, h.msg_flags);
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let segment = if self.coalesce { gro_segment(&h) } else { 0 };
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let segment = 0;
            self.finish_slot(i, r as usize, alen, flags, segment);
            i += 1;
        }
        self.filled = i;
        Ok(self.datagrams)
    }
}

/// The datagrams of a [`RecvBatch`]'s last receive ([`RecvBatch::iter`]).
struct Datagrams<'a> {
    batch: &'a RecvBatch,
    /// The buffer the next datagram is in, and where in it.
    slot: usize,
    offset: usize,
    /// Datagrams not yet handed out.
    left: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = Result<Datagram<'a>, Truncated>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.batch;
        let i = self.slot;
        let slot = &b.slots[i];
        let source = read_sockaddr(&b.addrs[i], slot.addr_len);
        if slot.truncated {
            self.slot += 1;
            return Some(Err(Truncated {
                source,
                len: slot.len.max(b.cap),
                capacity: b.cap,
            }));
        }
        let size = if slot.segment > 0 {
            slot.segment
        } else {
            slot.len
        };
        let start = self.offset;
        let end = (start + size).min(slot.len);
        if end >= slot.len {
            self.slot += 1;
            self.offset = 0;
        } else {
            self.offset = end;
        }
        let base = i * b.cap;
        Some(Ok(Datagram {
            source,
            payload: &b.buf[base + start..base + end],
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Datagrams<'_> {}

// ---------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------

/// After a send system call failed with `e`, having sent `sent` datagrams before it: `None`
/// to retry (interrupted), or what the caller returns: `Ok(sent)` when the kernel pushes
/// back or something was already sent, the error otherwise.
fn send_failure_of(e: io::Error, sent: usize) -> Option<io::Result<usize>> {
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(Ok(sent)),
        _ if sent > 0 => Some(Ok(sent)),
        _ => Some(Err(e)),
    }
}

/// [`send_failure_of`] the calling thread's last OS error.
fn send_failure(sent: usize) -> Option<io::Result<usize>> {
    send_failure_of(io::Error::last_os_error(), sent)
}

// ---------------------------------------------------------------------------
// Segmentation offload (UDP GSO, Linux 4.18+)
// ---------------------------------------------------------------------------
//
// One `sendmsg` with a `UDP_SEGMENT` control message carries several datagrams of one
// size (the last may be shorter) through the network stack as one buffer; the kernel
// (or the NIC) cuts it into ordinary datagrams at the end, so receivers see no
// difference. The per-datagram cost of the send path (route, netfilter, queueing) is
// paid once per run instead of once per datagram.

/// `UDP_SEGMENT` from `linux/udp.h` (level `SOL_UDP`): the segment size of a GSO send.
/// The `libc` crate defines it only for some C libraries.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UDP_SEGMENT: libc::c_int = 103;

/// Most payload bytes one GSO send may carry: the largest UDP payload of an IPv4
/// datagram (65 535 less the 20-byte IP and 8-byte UDP headers).
pub const GSO_MAX_BYTES: usize = 65_507;

/// Most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`, 64 before
/// Linux 6.10 and 128 since).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// How many datagrams, from the first, can leave as one GSO send: every one as long as
/// the first, then at most one shorter (which ends the run), while `joins(k)` (e.g. the
/// same destination) and within [`GSO_MAX_BYTES`] and [`GSO_MAX_SEGMENTS`]. Always at
/// least 1 when `n > 0`.
fn gso_run(n: usize, len: impl Fn(usize) -> usize, joins: impl Fn(usize) -> bool) -> usize {
    let first = len(0);
    let mut total = first;
    let mut k = 1;
    while k < n.min(GSO_MAX_SEGMENTS) {
        let l = len(k);
        if l == 0 || l > first || total + l > GSO_MAX_BYTES || !joins(k) {
            break;
        }
        total += l;
        k += 1;
        if l < first {
            break;
        }
    }
    k
}

/// Whether an error from a send that carried a `UDP_SEGMENT` control message means the
/// path cannot segment: a device without checksum offload (`EIO`), a segment over the
/// device MTU or a socket without UDP checksums (`EINVAL`), or a run the kernel finds too
/// long (`EMSGSIZE`). The caller then sends one datagram per frame. (A kernel without
/// GSO at all, before 4.18, ignores the control message instead of failing: see
/// [`segmentation_supported`].)
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EMSGSIZE)
    )
}

/// Whether the kernel knows UDP segmentation offload (Linux 4.18+): `getsockopt` of
/// `UDP_SEGMENT` fails on older kernels, which would silently ignore the control message
/// and send a run as one oversized, IP-fragmented datagram. Always `false` elsewhere.
/// Check it before turning segmentation on ([`send_slices_segmented`],
/// [`SendBatch::set_segmentation`]).
///
/// ```
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let gso = nakcast::transport::batch::segmentation_supported(&socket);
/// # let _ = gso;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn segmentation_supported<S: AsFd>(socket: &S) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut v: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt on a live descriptor writing at most `len` bytes into `v`.
        let r = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_UDP,
                UDP_SEGMENT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        r == 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        false
    }
}

/// Room for one control message carrying a `u16` (`CMSG_SPACE(2)` is 24 bytes on 64-bit
/// Linux), aligned for `cmsghdr`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SegmentCmsg([u8; 32]);

#[cfg(any(target_os = "linux", target_os = "android"))]
impl SegmentCmsg {
    const ZERO: SegmentCmsg = SegmentCmsg([0; 32]);

    /// Write a `UDP_SEGMENT` control message of `size` into this buffer and point `hdr`'s
    /// control fields at it.
    fn attach(&mut self, hdr: &mut libc::msghdr, size: u16) {
        // SAFETY: CMSG_SPACE only computes a length.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as _) } as usize;
        debug_assert!(space <= self.0.len());
        hdr.msg_control = self.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: `hdr` names this buffer, 8-byte aligned and at least `space` bytes
        // long, so CMSG_FIRSTHDR returns its start (non-null) and the header and its
        // 2-byte payload both lie inside it; the payload may be unaligned, hence
        // write_unaligned.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(hdr);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as _) as _;
            ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
        }
    }
}

/// Most datagrams [`send_slices`] sends per system call.
pub const MAX_GATHER: usize = 32;

/// Send each of `frames` (at most [`MAX_GATHER`]) as one datagram on a connected socket,
/// straight from where they lie (gather: no copy into a batch), with one `sendmmsg(2)` on
/// Linux/Android (one `send(2)` each elsewhere). Returns how many went out, in order:
/// fewer than asked when the kernel pushes back (`WouldBlock` is never an error). Any
/// other error is returned only if nothing was sent. Allocates nothing.
pub fn send_slices<S: AsFd>(socket: &S, frames: &[&[u8]]) -> io::Result<usize> {
    send_slices_segmented(socket, frames, &mut false)
}

/// [`send_slices`] with segmentation offload while `*segment` is `true` (Linux/Android):
/// consecutive frames of one length, then at most one shorter, leave as one GSO send
/// (still one `sendmmsg(2)` for all of them), which receivers get as the same separate
/// datagrams. If the kernel refuses a segmented send (no GSO on the path: `EIO`, `EINVAL`,
/// `EMSGSIZE`, ...), `*segment` is set to `false` for good and the frames go one datagram
/// each, so the caller can keep the flag for its socket. Elsewhere the flag is ignored.
/// Set it only where [`segmentation_supported`] says so.
pub fn send_slices_segmented<S: AsFd>(
    socket: &S,
    frames: &[&[u8]],
    segment: &mut bool,
) -> io::Result<usize> {
    let frames = &frames[..frames.len().min(MAX_GATHER)];
    if frames.is_empty() {
        return Ok(0);
    }
    let fd = socket.as_fd().as_raw_fd();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iovecs: [libc::iovec; MAX_GATHER] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; MAX_GATHER] = unsafe { mem::zeroed() };
        let mut cmsgs = [SegmentCmsg::ZERO; MAX_GATHER];
        let mut runs = [0usize; MAX_GATHER];
        for (i, f) in frames.iter().enumerate() {
            iovecs[i].iov_base = f.as_ptr() as *mut libc::c_void;
            iovecs[i].iov_len = f.len();
        }
        let mut sent = 0;
        while sent < frames.len() {
            // One message per run of frames (one frame each without segmentation).
            let (mut msgs, mut i) = (0, sent);
            while i < frames.len() {
                let run = if *segment {
                    gso_run(frames.len() - i, |k| frames[i + k].len(), |_| true)
                } else {
                    1
                };
                // SAFETY: all-zero is a valid mmsghdr.
                hdrs[msgs] = unsafe { mem::zeroed() };
                let h = &mut hdrs[msgs].msg_hdr;
                // SAFETY: i + run <= frames.len() <= MAX_GATHER: in bounds of `iovecs`.
                h.msg_iov = unsafe { iovecs.as_mut_ptr().add(i) };
                h.msg_iovlen = run as _;
                if run > 1 {
                    cmsgs[msgs].attach(h, frames[i].len() as u16);
                }
                runs[msgs] = run;
                msgs += 1;
                i += run;
            }
            // SAFETY: hdrs[..msgs] are initialised mmsghdrs with no address (a connected
            // socket), each naming `runs[m]` consecutive iovecs over live `&[u8]`s
            // borrowed for this whole call and, for a run, a control message in
            // `cmsgs[m]`; the kernel only reads the payloads and control messages and
            // writes `msg_len`. All arrays live on this stack frame until the call returns.
            let r = unsafe {
                libc::sendmmsg(fd, hdrs.as_mut_ptr(), msgs as _, libc::MSG_DONTWAIT as _)
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if runs[0] > 1 && gso_refused(&e) {
                    *segment = false;
                    continue;
                }
                match send_failure_of(e, sent) {
                    None => continue,
                    Some(result) => return result,
                }
            }
            sent += runs[..r as usize].iter().sum::<usize>();
        }
        Ok(sent)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = segment;
        let mut sent = 0;
        while sent < frames.len() {
            let f = frames[sent];
            // SAFETY: `f` is a live slice of `f.len()` bytes for the call.
            let r = unsafe { libc::send(fd, f.as_ptr().cast(), f.len(), libc::MSG_DONTWAIT) };
            if r < 0 {
                match send_failure(sent) {
                    None => continue,
                    Some(result) => return result,
                }
            }
            sent += 1;
        }
        Ok(sent)
    }
}

/// Why a datagram could not be queued in a [`SendBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// All slots hold unsent datagrams; call [`SendBatch::send`] first.
    Full,
    /// The payload is larger than the per-datagram buffer.
    TooLarge {
        /// Payload length.
        len: usize,
        /// Buffer size.
        capacity: usize,
    },
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("send batch is full; send it before queuing more"),
            PushError::TooLarge { len, capacity } => write!(
                f,
                "datagram of {len} bytes exceeds the {capacity}-byte send buffer slot"
            ),
        }
    }
}

impl std::error::Error for PushError {}

/// A preallocated queue of outgoing datagrams, sent with `sendmmsg(2)`.
///
/// Datagrams are written straight into the batch's buffers
/// ([`push`](Self::push) copies, [`push_with`](Self::push_with) lets the
/// caller encode in place). [`send`](Self::send) transmits as many as the
/// kernel accepts; anything not sent (partial send, `WouldBlock`) stays queued,
/// in order, for the next call.
pub struct SendBatch {
    /// `count * cap` bytes; slot `i` is `buf[i*cap..(i+1)*cap]`.
    buf: Box<[u8]>,
    cap: usize,
    lens: Box<[usize]>,
    dests: Box<[libc::sockaddr_storage]>,
    /// 0 = use the connected destination.
    dest_lens: Box<[libc::socklen_t]>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    iovecs: Box<[libc::iovec]>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    hdrs: Box<[libc::mmsghdr]>,
    /// One control-message buffer per message of a `sendmmsg` (segmentation).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    cmsgs: Box<[SegmentCmsg]>,
    /// Datagrams in each message of the last `sendmmsg` (1 unless segmented).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    runs: Box<[usize]>,
    /// Send runs of equal-sized datagrams as GSO sends ([`SendBatch::set_segmentation`]).
    segment: bool,
    /// First unsent slot.
    head: usize,
    /// One past the last queued slot.
    tail: usize,
}

// SAFETY: same argument as for RecvBatch: the raw pointers in `iovecs`/`hdrs`
// only ever point into memory owned by this value, are rebuilt before each
// system call and never dereferenced by Rust code.
unsafe impl Send for SendBatch {}
// SAFETY: `&SendBatch` exposes only lengths; raw pointers are used solely via
// `&mut self`.
unsafe impl Sync for SendBatch {}

impl fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBatch")
            .field("batch", &self.lens.len())
            .field("datagram_capacity", &self.cap)
            .field("queued", &self.len())
            .finish()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new(DEFAULT_BATCH, DEFAULT_DATAGRAM_CAPACITY)
    }
}

impl SendBatch {
    /// Allocates `count` slots of `datagram_capacity` bytes plus headers; the
    /// only allocation the batch ever makes.
    ///
    /// # Panics
    /// If `count` is 0 or above [`MAX_BATCH`], or `datagram_capacity` is 0.
    pub fn new(count: usize, datagram_capacity: usize) -> Self {
        check_dims(count, datagram_capacity);
        SendBatch {
            buf: vec![0u8; count * datagram_capacity].into_boxed_slice(),
            cap: datagram_capacity,
            lens: vec![0; count].into_boxed_slice(),
            dests: vec![zeroed_storage(); count].into_boxed_slice(),
            dest_lens: vec![0; count].into_boxed_slice(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            iovecs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ]
            .into_boxed_slice(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            hdrs: (0..count)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            cmsgs: vec![SegmentCmsg::ZERO; count].into_boxed_slice(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            runs: vec![0; count].into_boxed_slice(),
            segment: false,
            head: 0,
            tail: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Send runs of queued datagrams that share a length (the last may be shorter) and a
    /// destination as one GSO send each, still one `sendmmsg(2)` per [`send`](Self::send)
    /// (Linux/Android; ignored elsewhere). Receivers see the same separate datagrams. Off
    /// by default; turn it on only where [`segmentation_supported`] says so. If the kernel
    /// refuses a segmented send (no GSO on the path), the batch turns it off for good and
    /// sends one datagram per slot: see [`segmentation`](Self::segmentation). When a
    /// segmented send fails for another reason, [`send`](Self::send) reports it like any
    /// failed datagram and [`pop_front`](Self::pop_front) drops the run's first datagram.
    ///
    /// ```
    /// # use nakcast::transport::batch::SendBatch;
    /// let mut batch = SendBatch::new(32, 1472);
    /// batch.set_segmentation(true);
    /// assert!(batch.segmentation());
    /// ```
    pub fn set_segmentation(&mut self, on: bool) {
        self.segment = on;
    }

    /// Whether runs are sent segmented: set by [`set_segmentation`](Self::set_segmentation),
    /// cleared when the kernel refused a segmented send.
    pub fn segmentation(&self) -> bool {
        self.segment
    }

    /// Whether slots `a` and `b` go to the same destination.
    fn same_dest(&self, a: usize, b: usize) -> bool {
        let (la, lb) = (self.dest_lens[a], self.dest_lens[b]);
        la == lb
            && (la == 0 || read_sockaddr(&self.dests[a], la) == read_sockaddr(&self.dests[b], lb))
    }

    /// Bytes available per datagram.
    pub fn datagram_capacity(&self) -> usize {
        self.cap
    }

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// `true` when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// `true` when no more datagrams can be queued.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Drops every queued datagram.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// Drops the oldest queued datagram (e.g. after [`send`](Self::send)
    /// reported an error specific to it, such as `EMSGSIZE`). Returns `false`
    /// if the queue was empty.
    pub fn pop_front(&mut self) -> bool {
        if self.is_empty() {
            return false;
        }
        self.head += 1;
        if self.head == self.tail {
            self.clear();
        }
        true
    }

    /// Returns a free slot index, compacting unsent datagrams to the front if
    /// the tail reached the end.
    fn free_slot(&mut self) -> Result<usize, PushError> {
        if self.tail == self.capacity() {
            if self.head == 0 {
                return Err(PushError::Full);
            }
            let (h, t, cap) = (self.head, self.tail, self.cap);
            self.buf.copy_within(h * cap..t * cap, 0);
            self.lens.copy_within(h..t, 0);
            self.dests.copy_within(h..t, 0);
            self.dest_lens.copy_within(h..t, 0);
            self.tail = t - h;
            self.head = 0;
        }
        Ok(self.tail)
    }

    /// Queues a copy of `payload` for `dest` (`None` = the socket's connected
    /// destination).
    pub fn push(&mut self, payload: &[u8], dest: Option<SocketAddr>) -> Result<(), PushError> {
        if payload.len() > self.cap {
            return Err(PushError::TooLarge {
                len: payload.len(),
                capacity: self.cap,
            });
        }
        self.push_with(dest, |slot| {
            slot[..payload.len()].copy_from_slice(payload);
            payload.len()
        })
    }

    /// Queues a datagram encoded in place: `encode` receives the whole
    /// `datagram_capacity()`-byte slot and returns how many bytes it wrote.
    ///
    /// # Panics
    /// If `encode` returns more than the slot size.
    pub fn push_with<F: FnOnce(&mut [u8]) -> usize>(
        &mut self,
        dest: Option<SocketAddr>,
        encode: F,
    ) -> Result<(), PushError> {
        self.push_from(|slot| Some((encode(slot), dest)))
            .map(|_| ())
    }

    /// Queues a datagram that `fill` encodes in place, choosing its destination as it
    /// goes: `fill` receives the whole free slot and returns the length written and the
    /// destination (`None` = the connected one), or `None` to queue nothing. Returns whether
    /// a datagram was queued. Saves the copy of [`push`](Self::push) when the producer
    /// (e.g. a protocol state machine) can write straight into the batch.
    ///
    /// # Panics
    /// If `fill` returns a length above the slot size.
    pub fn push_from<F>(&mut self, fill: F) -> Result<bool, PushError>
    where
        F: FnOnce(&mut [u8]) -> Option<(usize, Option<SocketAddr>)>,
    {
        let i = self.free_slot()?;
        let cap = self.cap;
        let Some((n, dest)) = fill(&mut self.buf[i * cap..(i + 1) * cap]) else {
            return Ok(false);
        };
        assert!(n <= cap, "encoder wrote {n} bytes into a {cap}-byte slot");
        self.lens[i] = n;
        self.dest_lens[i] = match dest {
            Some(a) => write_sockaddr(&a, &mut self.dests[i]),
            None => 0,
        };
        self.tail += 1;
        Ok(true)
    }

    /// Sends queued datagrams without blocking, oldest first.
    ///
    /// Returns how many were sent by this call. Unsent datagrams (kernel
    /// buffer full, i.e. `WouldBlock`, or a partial `sendmmsg`) stay queued:
    /// check [`is_empty`](Self::is_empty) and wait for writability before
    /// calling again. `WouldBlock` is never returned as an error. Any other
    /// error is returned only if nothing was sent in this call; the datagram
    /// that failed stays at the front (drop it with
    /// [`pop_front`](Self::pop_front) if the error is specific to it).
    pub fn send<S: AsFd>(&mut self, socket: &S) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.send_mmsg(socket.as_fd().as_raw_fd())
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            self.send_each(socket)
        }
    }

    fn advance(&mut self, n: usize) {
        self.head += n;
        if self.head == self.tail {
            self.clear();
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_mmsg(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut sent = 0;
        while !self.is_empty() {
            let (h0, t0, cap) = (self.head, self.tail, self.cap);
            // Rebuild every pointer for the queued range from the owning
            // boxes (same ordering discipline as RecvBatch::recv_mmsg).
            let base = self.buf.as_mut_ptr();
            for i in h0..t0 {
                // SAFETY: i < count, so the slot lies within `buf`.
                self.iovecs[i].iov_base = unsafe { base.add(i * cap) }.cast();
                self.iovecs[i].iov_len = self.lens[i];
            }
            let iov_ptr = self.iovecs.as_mut_ptr();
            // One message per run of slots (one slot each without segmentation), packed
            // from hdrs[0].
            let (mut msgs, mut i) = (0, h0);
            while i < t0 {
                let run = if self.segment {
                    gso_run(t0 - i, |k| self.lens[i + k], |k| self.same_dest(i, i + k))
                } else {
                    1
                };
                let dl = self.dest_lens[i];
                let name = if dl == 0 {
                    ptr::null_mut()
                } else {
                    (&mut self.dests[i] as *mut libc::sockaddr_storage).cast()
                };
                let h = &mut self.hdrs[msgs];
                h.msg_len = 0;
                h.msg_hdr.msg_name = name;
                h.msg_hdr.msg_namelen = dl;
                // SAFETY: i + run <= t0 <= count == iovecs.len(): in bounds.
                h.msg_hdr.msg_iov = unsafe { iov_ptr.add(i) };
                h.msg_hdr.msg_iovlen = run as _;
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
                if run > 1 {
                    self.cmsgs[msgs].attach(&mut h.msg_hdr, self.lens[i] as u16);
                }
                self.runs[msgs] = run;
                msgs += 1;
                i += run;
            }
            // SAFETY: hdrs[..msgs] are initialised mmsghdrs, each referencing `runs[m]`
            // consecutive iovecs over `lens[i]` (<= cap) initialised bytes of their
            // slots, either no address or `dests[i]` with its length, and for a run a
            // control message in `cmsgs[m]`. All memory is owned by `self`, exclusively
            // borrowed for the call, so it cannot be freed, moved or aliased meanwhile;
            // the kernel only reads the payloads and writes `msg_len`.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    msgs as _,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if self.runs[0] > 1 && gso_refused(&e) {
                    self.segment = false;
                    continue;
                }
                match send_failure_of(e, sent) {
                    None => continue,
                    Some(result) => return result,
                }
            }
            let n = self.runs[..r as usize].iter().sum::<usize>();
            sent += n;
            self.advance(n);
        }
        Ok(sent)
    }

    /// Like [`send`](Self::send) but with one `sendto(2)` system call per
    /// datagram (the portable fallback; also useful for comparison).
    pub fn send_each<S: AsFd>(&mut self, socket: &S) -> io::Result<usize> {
        let fd = socket.as_fd().as_raw_fd();
        let mut sent = 0;
        while !self.is_empty() {
            let i = self.head;
            let start = i * self.cap;
            let payload = &self.buf[start..start + self.lens[i]];
            let dl = self.dest_lens[i];
            let dest: *const libc::sockaddr = if dl == 0 {
                ptr::null()
            } else {
                (&self.dests[i] as *const libc::sockaddr_storage).cast()
            };
            // SAFETY: `payload` is a live slice of `payload.len()` bytes; `dest`
            // is null with length 0 or points to `dests[i]` holding `dl` valid
            // bytes; both are borrowed from `self` for the duration of the call.
            let r = unsafe {
                libc::sendto(
                    fd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    libc::MSG_DONTWAIT,
                    dest,
                    dl,
                )
            };
            if r < 0 {
                match send_failure(sent) {
                    None => continue,
                    Some(result) => return result,
                }
            }
            sent += 1;
            self.advance(1);
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip() {
        let mut st = zeroed_storage();
        for a in [
            "127.0.0.1:4000".parse::<SocketAddr>().unwrap(),
            "[ff02::1:2]:5000".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 7, 0, 3)),
        ] {
            let l = write_sockaddr(&a, &mut st);
            assert_eq!(read_sockaddr(&st, l), a);
        }
    }

    #[test]
    fn gso_runs_take_equal_lengths_then_one_shorter() {
        let run = |lens: &[usize]| gso_run(lens.len(), |k| lens[k], |_| true);
        assert_eq!(run(&[100]), 1);
        assert_eq!(run(&[100, 100, 100]), 3);
        assert_eq!(run(&[100, 100, 60, 60]), 3); // a shorter one ends the run
        assert_eq!(run(&[100, 200, 200]), 1); // a longer one cannot follow
        assert_eq!(run(&[100, 0, 100]), 1);
        assert_eq!(run(&[1472; 60]), GSO_MAX_BYTES / 1472); // 44: within 64 KiB
        assert_eq!(run(&[32; 100]), GSO_MAX_SEGMENTS);
        let lens = [50; 8];
        assert_eq!(gso_run(8, |k| lens[k], |k| k < 5), 5); // e.g. another destination
    }

    #[test]
    fn send_queue_compacts() {
        let mut b = SendBatch::new(3, 8);
        for i in 0..3u8 {
            b.push(&[i; 4], None).unwrap();
        }
        assert_eq!(b.push(&[9], None), Err(PushError::Full));
        assert_eq!(
            b.push(&[0; 9], None),
            Err(PushError::TooLarge {
                len: 9,
                capacity: 8
            })
        );
        assert!(b.pop_front());
        b.push(&[7; 2], None).unwrap();
        assert_eq!((b.head, b.tail), (0, 3));
        assert_eq!(&b.buf[..4], &[1; 4]);
        assert_eq!(&b.buf[16..18], &[7; 2]);
        assert_eq!(b.lens[2], 2);
    }
}
