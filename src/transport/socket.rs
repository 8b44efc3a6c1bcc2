//! UDP socket set-up (IPv4/IPv6, multicast and unicast) on top of `socket2`.
//!
//! Everything here is blocking-free configuration: every socket returned is
//! non-blocking and close-on-exec, ready to be registered with `mio` (via
//! `mio::net::UdpSocket::from_std`) or used with [`super::batch`].
//!
//! Problems that do not prevent operation (e.g. the kernel granting a smaller
//! socket buffer than requested) are returned as [`SocketWarning`]s inside
//! [`OpenedSocket`] so callers can log and count them; hard failures are a
//! [`TransportError`] that names the address, interface and option involved and
//! suggests a fix.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Default requested size for both the receive and the send socket buffer: 4 MiB.
pub const DEFAULT_BUFFER_SIZE: usize = 4 * 1024 * 1024;

/// Which network interface multicast traffic uses. In configuration files it is a string:
/// `"any"`, an address (`"127.0.0.1"`) or a name (`"eth0"`).
///
/// ```
/// use nakcast::{Channel, Interface};
/// assert_eq!("127.0.0.1".parse::<Interface>()?, Interface::Addr([127, 0, 0, 1].into()));
/// assert_eq!("lo".parse::<Interface>()?, Interface::Name("lo".into()));
/// assert_eq!("any".parse::<Interface>()?, Interface::Any);
/// let channel = Channel::new("239.255.0.1:40456".parse()?).with_interface("lo".parse()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Interface {
    /// Let the kernel choose (IPv4 `INADDR_ANY`, IPv6 index 0), i.e. follow the
    /// routing table. Fine on single-homed hosts, surprising on multi-homed ones.
    #[default]
    Any,
    /// A local address assigned to the interface (e.g. `127.0.0.1`, `::1`).
    Addr(IpAddr),
    /// An interface name such as `eth0` or `lo`, resolved with
    /// `if_nametoindex(3)` and `getifaddrs(3)`.
    Name(String),
}

impl From<String> for Interface {
    fn from(s: String) -> Self {
        let Ok(i) = s.parse();
        i
    }
}

impl From<Interface> for String {
    fn from(i: Interface) -> Self {
        match i {
            Interface::Any => "any".to_owned(),
            other => other.to_string(),
        }
    }
}

impl FromStr for Interface {
    type Err = std::convert::Infallible;

    /// Parses `""`/`"any"` as [`Interface::Any`], an IP literal as
    /// [`Interface::Addr`], anything else as [`Interface::Name`].
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        Ok(if s.is_empty() || s.eq_ignore_ascii_case("any") {
            Interface::Any
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            Interface::Addr(ip)
        } else {
            Interface::Name(s.to_owned())
        })
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Any => f.write_str("<any>"),
            Interface::Addr(a) => write!(f, "{a}"),
            Interface::Name(n) => f.write_str(n),
        }
    }
}

/// Plain socket configuration, shared by senders and receivers.
///
/// Deserialising a partial document fills the missing fields from
/// [`SocketConfig::default`].
///
/// ```
/// # use nakcast::{SocketConfig, Subscriber, SubscriberOptions};
/// # let channel = nakcast::transport::doc_channel();
/// let mut opts = SubscriberOptions::new(channel);
/// opts.socket = SocketConfig { recv_buffer: 16 << 20, ..SocketConfig::default() };
/// let sub = Subscriber::new(opts)?;
/// let partial: SocketConfig = toml::from_str("multicast_ttl = 4")?; // the rest: defaults
/// assert_eq!((partial.multicast_ttl, partial.reuse_port), (4, true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketConfig {
    /// Interface used for `IP_MULTICAST_IF`/`IPV6_MULTICAST_IF`, group joins and
    /// the sender's bind address. Default: [`Interface::Any`].
    pub interface: Interface,
    /// Deliver our own multicast datagrams to local members
    /// (`IP_MULTICAST_LOOP`). Default: `true`.
    pub multicast_loop: bool,
    /// Multicast TTL (IPv4) / hop limit (IPv6). Default: `1` (stay on the link).
    pub multicast_ttl: u32,
    /// `SO_REUSEADDR`. Default: `true`.
    pub reuse_addr: bool,
    /// `SO_REUSEPORT` on multicast receivers, so several subscriber processes on
    /// one host can share `group:port` (each gets a copy of every datagram).
    /// Never applied to unicast receivers, where the kernel would load-balance
    /// datagrams between sockets instead. Default: `true`.
    pub reuse_port: bool,
    /// Requested `SO_RCVBUF` in bytes (the effective size the kernel grants).
    /// Default: 4 MiB.
    pub recv_buffer: usize,
    /// Requested `SO_SNDBUF` in bytes. Default: 4 MiB.
    pub send_buffer: usize,
    /// Source port for senders; `0` picks an ephemeral port. Default: `0`.
    pub source_port: u16,
    /// Senders: send runs of equal-sized frames (a burst of full frames, a repair) as one
    /// UDP segmentation-offload (GSO) send each, which the kernel or the NIC cuts into the
    /// same datagrams receivers would otherwise get (Linux 4.18+; elsewhere ignored). It
    /// turns itself off if the kernel refuses it on the path. A lone message is sent on
    /// its own either way. Default: `true`.
    pub segmentation_offload: bool,
    /// Receivers: take a burst of equal-sized datagrams from one sender (such as one
    /// segmentation-offload send) in one receive buffer, which is handed out as the same
    /// separate datagrams (UDP GRO, Linux 5.0+; elsewhere ignored). Each of a subscriber's
    /// 32 receive buffers is then 64 KiB (2 MiB of address space, touched only as far as
    /// datagrams fill it). Default: `true`.
    pub receive_offload: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            interface: Interface::Any,
            multicast_loop: true,
            multicast_ttl: 1,
            reuse_addr: true,
            reuse_port: true,
            recv_buffer: DEFAULT_BUFFER_SIZE,
            send_buffer: DEFAULT_BUFFER_SIZE,
            source_port: 0,
            segmentation_offload: true,
            receive_offload: true,
        }
    }
}

/// A non-fatal condition met while opening a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketWarning {
    /// The kernel granted a smaller socket buffer than requested: it clamps
    /// `SO_RCVBUF`/`SO_SNDBUF` at the named sysctl. Raise it with e.g.
    /// `sysctl -w net.core.rmem_max=67108864`.
    BufferClamp {
        /// Bytes requested.
        requested: usize,
        /// Effective bytes granted (Linux reports twice this through
        /// `getsockopt`; the halved figure is stored here).
        granted: usize,
        /// The sysctl that caps it: `net.core.rmem_max` or `net.core.wmem_max`.
        sysctl: &'static str,
    },
}

impl fmt::Display for SocketWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketWarning::BufferClamp {
                requested,
                granted,
                sysctl,
            } => write!(
                f,
                "socket buffer clamped: requested {requested} bytes, kernel granted {granted}; \
                 raise {sysctl} (e.g. `sysctl -w {sysctl}={requested}`) to get the full size"
            ),
        }
    }
}

/// How many of `warnings` are [`SocketWarning::BufferClamp`]s.
pub(crate) fn buffer_clamps(warnings: &[SocketWarning]) -> u64 {
    warnings
        .iter()
        .filter(|w| matches!(w, SocketWarning::BufferClamp { .. }))
        .count() as u64
}

/// Effective socket buffer sizes after set-up (already halved on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    /// Effective `SO_RCVBUF` in bytes.
    pub recv: usize,
    /// Effective `SO_SNDBUF` in bytes.
    pub send: usize,
}

/// A configured, non-blocking UDP socket plus what was learnt opening it.
#[derive(Debug)]
pub struct OpenedSocket {
    /// The socket. Convert with `mio::net::UdpSocket::from_std` to register it.
    pub socket: UdpSocket,
    /// Local address after bind/connect. For a sender this is the source
    /// address receivers see.
    pub local_addr: SocketAddr,
    /// Effective buffer sizes.
    pub buffers: BufferSizes,
    /// Non-fatal problems (log them and count them).
    pub warnings: Vec<SocketWarning>,
}

impl OpenedSocket {
    /// The local address (see [`OpenedSocket::local_addr`] field).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// An interface resolved to the identifiers the socket options need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInterface {
    /// Interface name, if known (always known unless [`Interface::Any`]).
    pub name: Option<String>,
    /// Interface index, `0` for "any".
    pub index: u32,
    /// An IPv4 address on the interface, if it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// An IPv6 address on the interface, if it has one (a non-link-local one
    /// is preferred).
    pub ipv6: Option<Ipv6Addr>,
}

impl fmt::Display for ResolvedInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, self.ipv4, self.ipv6) {
            (None, _, _) => f.write_str("<any interface>"),
            (Some(n), Some(v4), _) => write!(f, "{n} ({v4}, index {})", self.index),
            (Some(n), None, Some(v6)) => write!(f, "{n} ({v6}, index {})", self.index),
            (Some(n), None, None) => write!(f, "{n} (index {})", self.index),
        }
    }
}

const HINT_MCAST: &str = "check the interface is up and multicast-capable (`ip link`), and that there is a \
     multicast route (`ip route add 224.0.0.0/4 dev IFACE` / `ip -6 route add ff00::/8 dev IFACE table local`)";

/// Every way socket set-up can fail. Each variant says what failed and how to
/// fix it in its `Display` text.
#[derive(Debug)]
pub enum TransportError {
    /// `socket(2)` itself failed (fd limit, unsupported address family).
    Create {
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
        /// OS error.
        source: io::Error,
    },
    /// A `setsockopt(2)`/`getsockopt(2)` call was refused.
    SetOption {
        /// Option name, e.g. `"SO_REUSEPORT"`.
        option: &'static str,
        /// The address the socket was being set up for.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// `bind(2)` failed.
    Bind {
        /// Address we tried to bind.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// `connect(2)` (fixing the default destination) failed.
    Connect {
        /// Destination.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// Joining the multicast group failed.
    Join {
        /// Group address.
        group: IpAddr,
        /// Interface (address or name and index) used for the join.
        interface: String,
        /// OS error.
        source: io::Error,
    },
    /// The group given to a multicast function is not a multicast address.
    NotMulticast {
        /// The offending address.
        addr: SocketAddr,
    },
    /// No interface has this name.
    InterfaceNotFound {
        /// Name given in the configuration.
        name: String,
        /// OS error from `if_nametoindex`.
        source: io::Error,
    },
    /// No local interface carries this address.
    InterfaceAddressNotFound {
        /// Address given in the configuration.
        addr: IpAddr,
    },
    /// The interface has no address of the family the group needs (e.g. an
    /// IPv6 group with an IPv4 interface address).
    InterfaceFamily {
        /// The group or destination.
        addr: SocketAddr,
        /// The configured interface.
        interface: String,
    },
    /// Enumerating interfaces with `getifaddrs(3)` failed.
    ListInterfaces {
        /// OS error.
        source: io::Error,
    },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TransportError::*;
        match self {
            Create { family, source } => write!(
                f,
                "cannot create {family} UDP socket: {source}; check the open-file limit (`ulimit -n`) \
                 and that {family} is enabled in the kernel"
            ),
            SetOption {
                option,
                addr,
                source,
            } => write!(
                f,
                "setting {option} on the socket for {addr} failed: {source}; check the value is \
                 supported by this kernel and that the process has the needed privileges"
            ),
            Bind { addr, source } => {
                write!(f, "bind to {addr} failed: {source}; ")?;
                match source.raw_os_error() {
                    Some(libc::EADDRINUSE) => f.write_str(
                        "the port is in use: enable reuse_addr/reuse_port on every socket sharing it, \
                         or pick another port",
                    ),
                    Some(libc::EADDRNOTAVAIL) => f.write_str(
                        "the address is not assigned to a local interface (`ip addr`)",
                    ),
                    Some(libc::EACCES) => {
                        f.write_str("ports below 1024 need CAP_NET_BIND_SERVICE")
                    }
                    _ => f.write_str("check the address is local and the port is free"),
                }
            }
            Connect { addr, source } => write!(
                f,
                "connect to {addr} failed: {source}; check there is a route to it (`ip route get {}`) \
                 and, for multicast, a multicast route on the interface",
                addr.ip()
            ),
            Join {
                group,
                interface,
                source,
            } => {
                write!(f, "join {group} on {interface} failed: {source}; ")?;
                match source.raw_os_error() {
                    Some(libc::ENODEV) => f.write_str(
                        "no interface has that address/index: use an address from `ip addr` or an \
                         interface name; ",
                    )?,
                    Some(libc::ENOBUFS) => {
                        f.write_str("too many memberships: raise net.ipv4.igmp_max_memberships; ")?
                    }
                    _ => {}
                }
                f.write_str(HINT_MCAST)
            }
            NotMulticast { addr } => write!(
                f,
                "{addr} is not a multicast address: use 224.0.0.0/4 (e.g. 239.255.0.0/16) or ff00::/8, \
                 or use the unicast functions"
            ),
            InterfaceNotFound { name, source } => write!(
                f,
                "interface {name:?} not found: {source}; list interfaces with `ip -br link`"
            ),
            InterfaceAddressNotFound { addr } => write!(
                f,
                "no local interface has address {addr}; pick one from `ip -br addr` or give an interface name"
            ),
            InterfaceFamily { addr, interface } => write!(
                f,
                "interface {interface} has no address of the family of {addr}; use an interface \
                 address of the same IP version as the group (`ip -br addr`)"
            ),
            ListInterfaces { source } => write!(f, "getifaddrs failed: {source}"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use TransportError::*;
        match self {
            Create { source, .. }
            | SetOption { source, .. }
            | Bind { source, .. }
            | Connect { source, .. }
            | Join { source, .. }
            | InterfaceNotFound { source, .. }
            | ListInterfaces { source } => Some(source),
            NotMulticast { .. } | InterfaceAddressNotFound { .. } | InterfaceFamily { .. } => None,
        }
    }
}

impl TransportError {
    /// The underlying OS error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        std::error::Error::source(self).and_then(|e| e.downcast_ref::<io::Error>())
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, TransportError>;

// ---------------------------------------------------------------------------
// Interface resolution
// ---------------------------------------------------------------------------

/// One `getifaddrs` entry, copied out into owned data.
struct IfAddr {
    name: String,
    addr: IpAddr,
}

/// Copies the IP entries of `getifaddrs(3)`.
fn list_if_addrs() -> Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success getifaddrs stores a
    // list we free below with freeifaddrs exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(TransportError::ListInterfaces {
            source: io::Error::last_os_error(),
        });
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list returned by getifaddrs,
        // which stays valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a non-null NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points to at least a `sockaddr`
        // header; we read sa_family before deciding how large it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: sa_family == AF_INET guarantees a full sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: sa_family == AF_INET6 guarantees a full sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push(IfAddr { name, addr });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; no
    // reference into the list outlives this point (names were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

fn name_to_index(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| TransportError::InterfaceNotFound {
        name: name.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"),
    })?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(TransportError::InterfaceNotFound {
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(idx)
}

fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// Resolves an [`Interface`] to its name, index and addresses.
///
/// [`Interface::Any`] resolves to index 0 and no addresses without touching
/// the system.
pub fn resolve_interface(iface: &Interface) -> Result<ResolvedInterface> {
    let name = match iface {
        Interface::Any => {
            return Ok(ResolvedInterface {
                name: None,
                index: 0,
                ipv4: None,
                ipv6: None,
            });
        }
        Interface::Name(n) => n.clone(),
        Interface::Addr(a) => {
            let addrs = list_if_addrs()?;
            match addrs.iter().find(|e| e.addr == *a) {
                Some(e) => e.name.clone(),
                None => return Err(TransportError::InterfaceAddressNotFound { addr: *a }),
            }
        }
    };
    let index = name_to_index(&name)?;
    let addrs = list_if_addrs()?;
    let on_iface = || addrs.iter().filter(|e| e.name == name).map(|e| e.addr);
    let (mut ipv4, mut ipv6) = (None, None);
    // An explicitly given address wins; otherwise take the first one
    // (preferring a non-link-local IPv6 address).
    if let Interface::Addr(a) = iface {
        match a {
            IpAddr::V4(v4) => ipv4 = Some(*v4),
            IpAddr::V6(v6) => ipv6 = Some(*v6),
        }
    }
    if ipv4.is_none() {
        ipv4 = on_iface().find_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
    }
    if ipv6.is_none() {
        let v6s = || {
            on_iface().filter_map(|a| match a {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            })
        };
        ipv6 = v6s()
            .find(|a| !is_link_local_v6(a))
            .or_else(|| v6s().next());
    }
    Ok(ResolvedInterface {
        name: Some(name),
        index,
        ipv4,
        ipv6,
    })
}

// ---------------------------------------------------------------------------
// Socket construction
// ---------------------------------------------------------------------------

fn new_udp(addr: &SocketAddr) -> Result<Socket> {
    let (domain, family) = match addr {
        SocketAddr::V4(_) => (Domain::IPV4, "IPv4"),
        SocketAddr::V6(_) => (Domain::IPV6, "IPv6"),
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|source| TransportError::Create { family, source })?;
    let opt = |option, r: io::Result<()>| {
        r.map_err(|source| TransportError::SetOption {
            option,
            addr: *addr,
            source,
        })
    };
    opt("O_NONBLOCK", s.set_nonblocking(true))?;
    if addr.is_ipv6() {
        opt("IPV6_V6ONLY", s.set_only_v6(true))?;
    }
    Ok(s)
}

fn set_opt(addr: &SocketAddr, option: &'static str, r: io::Result<()>) -> Result<()> {
    r.map_err(|source| TransportError::SetOption {
        option,
        addr: *addr,
        source,
    })
}

/// Sets both buffer sizes, reads them back and records clamps.
fn set_buffers(
    s: &Socket,
    addr: &SocketAddr,
    cfg: &SocketConfig,
    warnings: &mut Vec<SocketWarning>,
) -> Result<BufferSizes> {
    // Linux doubles the value on set (bookkeeping overhead) and reports the
    // doubled value on get; other systems report what they store.
    let halve = |v: usize| if cfg!(target_os = "linux") { v / 2 } else { v };
    let mut one = |requested: usize,
                   set: &dyn Fn(usize) -> io::Result<()>,
                   get: &dyn Fn() -> io::Result<usize>,
                   option: &'static str,
                   sysctl: &'static str|
     -> Result<usize> {
        if requested > 0 {
            set_opt(addr, option, set(requested))?;
        }
        let granted = halve(get().map_err(|source| TransportError::SetOption {
            option,
            addr: *addr,
            source,
        })?);
        if requested > 0 && granted < requested {
            warnings.push(SocketWarning::BufferClamp {
                requested,
                granted,
                sysctl,
            });
        }
        Ok(granted)
    };
    let recv = one(
        cfg.recv_buffer,
        &|n| s.set_recv_buffer_size(n),
        &|| s.recv_buffer_size(),
        "SO_RCVBUF",
        "net.core.rmem_max",
    )?;
    let send = one(
        cfg.send_buffer,
        &|n| s.set_send_buffer_size(n),
        &|| s.send_buffer_size(),
        "SO_SNDBUF",
        "net.core.wmem_max",
    )?;
    Ok(BufferSizes { recv, send })
}

fn local_addr_of(s: &Socket, addr: &SocketAddr) -> Result<SocketAddr> {
    s.local_addr()
        .and_then(|a| {
            a.as_socket()
                .ok_or_else(|| io::Error::other("local address is not an IP address"))
        })
        .map_err(|source| TransportError::SetOption {
            option: "getsockname",
            addr: *addr,
            source,
        })
}

fn iface_label(iface: &Interface, r: &ResolvedInterface) -> String {
    match iface {
        Interface::Any => "<any interface>".to_owned(),
        Interface::Addr(a) => format!("{a}"),
        Interface::Name(_) => r.to_string(),
    }
}

/// Opens a non-blocking multicast receiver for `group` (IP and port).
///
/// On Linux the socket binds to `group:port` (so it only sees that group's
/// traffic), sets `SO_REUSEADDR`/`SO_REUSEPORT` per `cfg` (so several processes
/// on one host each receive every datagram), disables `IP_MULTICAST_ALL`, and
/// joins the group on the configured interface: by address for IPv4 (by index
/// when the interface was given by name and has no IPv4 address), by index for
/// IPv6.
pub fn open_multicast_receiver(group: SocketAddr, cfg: &SocketConfig) -> Result<OpenedSocket> {
    if !group.ip().is_multicast() {
        return Err(TransportError::NotMulticast { addr: group });
    }
    let iface = resolve_interface(&cfg.interface)?;
    let label = iface_label(&cfg.interface, &iface);
    // An interface given by address must match the group's IP version.
    if let Interface::Addr(a) = cfg.interface
        && a.is_ipv4() != group.is_ipv4()
    {
        return Err(TransportError::InterfaceFamily {
            addr: group,
            interface: label,
        });
    }
    let s = new_udp(&group)?;
    set_opt(&group, "SO_REUSEADDR", s.set_reuse_address(cfg.reuse_addr))?;
    set_opt(&group, "SO_REUSEPORT", s.set_reuse_port(cfg.reuse_port))?;
    let mut warnings = Vec::new();
    let buffers = set_buffers(&s, &group, cfg, &mut warnings)?;
    match group {
        SocketAddr::V4(g) => {
            #[cfg(target_os = "linux")]
            set_opt(&group, "IP_MULTICAST_ALL", s.set_multicast_all_v4(false))?;
            let bind_ip = if cfg!(target_os = "linux") {
                *g.ip()
            } else {
                Ipv4Addr::UNSPECIFIED
            };
            let bind = SocketAddr::V4(SocketAddrV4::new(bind_ip, g.port()));
            s.bind(&SockAddr::from(bind))
                .map_err(|source| TransportError::Bind { addr: bind, source })?;
            let joined = match (&cfg.interface, iface.ipv4) {
                (_, Some(a)) => s.join_multicast_v4(g.ip(), &a),
                (Interface::Any, None) => s.join_multicast_v4(g.ip(), &Ipv4Addr::UNSPECIFIED),
                #[cfg(target_os = "linux")]
                (_, None) => s.join_multicast_v4_n(
                    g.ip(),
                    &socket2::InterfaceIndexOrAddress::Index(iface.index),
                ),
                #[cfg(not(target_os = "linux"))]
                (_, None) => {
                    return Err(TransportError::InterfaceFamily {
                        addr: group,
                        interface: label,
                    });
                }
            };
            joined.map_err(|source| TransportError::Join {
                group: group.ip(),
                interface: label,
                source,
            })?;
        }
        SocketAddr::V6(g) => {
            #[cfg(target_os = "linux")]
            set_opt(&group, "IPV6_MULTICAST_ALL", s.set_multicast_all_v6(false))?;
            let bind_ip = if cfg!(target_os = "linux") {
                *g.ip()
            } else {
                Ipv6Addr::UNSPECIFIED
            };
            // Link- and interface-local groups need a scope id to bind.
            let bind = SocketAddr::V6(SocketAddrV6::new(bind_ip, g.port(), 0, iface.index));
            s.bind(&SockAddr::from(bind))
                .map_err(|source| TransportError::Bind { addr: bind, source })?;
            s.join_multicast_v6(g.ip(), iface.index)
                .map_err(|source| TransportError::Join {
                    group: group.ip(),
                    interface: label,
                    source,
                })?;
        }
    }
    let local_addr = local_addr_of(&s, &group)?;
    Ok(OpenedSocket {
        socket: s.into(),
        local_addr,
        buffers,
        warnings,
    })
}

/// Opens a non-blocking sender whose default destination is `dest`.
///
/// The socket binds to the interface address (or the wildcard for
/// [`Interface::Any`]) with `cfg.source_port` (0 = ephemeral). For a multicast
/// `dest` it sets `IP_MULTICAST_IF`/`IPV6_MULTICAST_IF`, loopback and TTL/hops.
/// It then `connect()`s to `dest`, which fixes the route once instead of per
/// send, and makes [`OpenedSocket::local_addr`] the concrete source address
/// receivers will see. A unicast `dest` is accepted too (unicast mode).
///
/// Note: a connected socket only receives datagrams from `dest`, so unicast
/// replies (NACKs) must arrive on a separate socket
/// ([`open_unicast_receiver`]).
pub fn open_sender(dest: SocketAddr, cfg: &SocketConfig) -> Result<OpenedSocket> {
    let iface = resolve_interface(&cfg.interface)?;
    let label = iface_label(&cfg.interface, &iface);
    let s = new_udp(&dest)?;
    let mut warnings = Vec::new();
    let buffers = set_buffers(&s, &dest, cfg, &mut warnings)?;
    let multicast = dest.ip().is_multicast();
    let (bind, connect_to) = match dest {
        SocketAddr::V4(d) => {
            let ip = match (&cfg.interface, iface.ipv4) {
                (Interface::Any, _) => Ipv4Addr::UNSPECIFIED,
                (_, Some(a)) => a,
                (_, None) => {
                    return Err(TransportError::InterfaceFamily {
                        addr: dest,
                        interface: label,
                    });
                }
            };
            if multicast {
                if ip.is_unspecified() {
                    // Keep the routing table's choice.
                } else {
                    set_opt(&dest, "IP_MULTICAST_IF", s.set_multicast_if_v4(&ip))?;
                }
                set_opt(
                    &dest,
                    "IP_MULTICAST_LOOP",
                    s.set_multicast_loop_v4(cfg.multicast_loop),
                )?;
                set_opt(
                    &dest,
                    "IP_MULTICAST_TTL",
                    s.set_multicast_ttl_v4(cfg.multicast_ttl),
                )?;
            }
            (
                SocketAddr::V4(SocketAddrV4::new(ip, cfg.source_port)),
                SocketAddr::V4(d),
            )
        }
        SocketAddr::V6(d) => {
            let ip = match (&cfg.interface, iface.ipv6) {
                (Interface::Any, _) => Ipv6Addr::UNSPECIFIED,
                (_, Some(a)) => a,
                (_, None) => {
                    return Err(TransportError::InterfaceFamily {
                        addr: dest,
                        interface: label,
                    });
                }
            };
            if multicast {
                set_opt(
                    &dest,
                    "IPV6_MULTICAST_IF",
                    s.set_multicast_if_v6(iface.index),
                )?;
                set_opt(
                    &dest,
                    "IPV6_MULTICAST_LOOP",
                    s.set_multicast_loop_v6(cfg.multicast_loop),
                )?;
                set_opt(
                    &dest,
                    "IPV6_MULTICAST_HOPS",
                    s.set_multicast_hops_v6(cfg.multicast_ttl),
                )?;
            }
            let scope = if is_link_local_v6(&ip) {
                iface.index
            } else {
                0
            };
            let dscope = if d.scope_id() != 0 {
                d.scope_id()
            } else if multicast {
                iface.index
            } else {
                0
            };
            (
                SocketAddr::V6(SocketAddrV6::new(ip, cfg.source_port, 0, scope)),
                SocketAddr::V6(SocketAddrV6::new(*d.ip(), d.port(), d.flowinfo(), dscope)),
            )
        }
    };
    if cfg.source_port != 0 {
        set_opt(&dest, "SO_REUSEADDR", s.set_reuse_address(cfg.reuse_addr))?;
    }
    // Always shareable, so that `open_reply_receiver` can bind the same address for the
    // unicast replies (NAKs) this connected socket cannot receive.
    set_opt(&dest, "SO_REUSEPORT", s.set_reuse_port(true))?;
    s.bind(&SockAddr::from(bind))
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    s.connect(&SockAddr::from(connect_to))
        .map_err(|source| TransportError::Connect {
            addr: connect_to,
            source,
        })?;
    let local_addr = local_addr_of(&s, &dest)?;
    Ok(OpenedSocket {
        socket: s.into(),
        local_addr,
        buffers,
        warnings,
    })
}

/// Opens a non-blocking socket bound to the same local address as `sender` (from
/// [`open_sender`]) to receive the unicast replies (NAKs) addressed to it, which the
/// connected sender cannot receive.
///
/// Both sockets carry `SO_REUSEPORT`; the kernel hands a datagram from the connected peer
/// to the sender and every other datagram to this socket.
pub fn open_reply_receiver(sender: &OpenedSocket, cfg: &SocketConfig) -> Result<OpenedSocket> {
    let addr = sender.local_addr;
    let s = new_udp(&addr)?;
    set_opt(&addr, "SO_REUSEPORT", s.set_reuse_port(true))?;
    let mut warnings = Vec::new();
    let buffers = set_buffers(&s, &addr, cfg, &mut warnings)?;
    s.bind(&SockAddr::from(addr))
        .map_err(|source| TransportError::Bind { addr, source })?;
    let local_addr = local_addr_of(&s, &addr)?;
    Ok(OpenedSocket {
        socket: s.into(),
        local_addr,
        buffers,
        warnings,
    })
}

/// Opens a non-blocking unicast receiver bound to `addr` (port 0 = ephemeral).
///
/// Applies `SO_REUSEADDR` per `cfg` but never `SO_REUSEPORT` (the kernel
/// would spread datagrams over the sharing sockets). Interface settings are
/// not used: `addr` already names the local address.
pub fn open_unicast_receiver(addr: SocketAddr, cfg: &SocketConfig) -> Result<OpenedSocket> {
    if addr.ip().is_multicast() {
        return Err(TransportError::Bind {
            addr,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "multicast address given to open_unicast_receiver (use open_multicast_receiver)",
            ),
        });
    }
    let s = new_udp(&addr)?;
    set_opt(&addr, "SO_REUSEADDR", s.set_reuse_address(cfg.reuse_addr))?;
    let mut warnings = Vec::new();
    let buffers = set_buffers(&s, &addr, cfg, &mut warnings)?;
    s.bind(&SockAddr::from(addr))
        .map_err(|source| TransportError::Bind { addr, source })?;
    let local_addr = local_addr_of(&s, &addr)?;
    Ok(OpenedSocket {
        socket: s.into(),
        local_addr,
        buffers,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_default_and_serde_shape() {
        let c = SocketConfig::default();
        assert!(c.multicast_loop && c.reuse_addr && c.reuse_port);
        assert_eq!(c.multicast_ttl, 1);
        assert_eq!(c.recv_buffer, 4 << 20);
        assert_eq!(
            "127.0.0.1".parse::<Interface>().unwrap(),
            Interface::Addr([127, 0, 0, 1].into())
        );
        assert_eq!(
            "lo".parse::<Interface>().unwrap(),
            Interface::Name("lo".into())
        );
        assert_eq!("".parse::<Interface>().unwrap(), Interface::Any);
    }

    #[test]
    fn resolve_lo() {
        let r = resolve_interface(&Interface::Name("lo".into())).unwrap();
        assert!(r.index > 0);
        assert_eq!(r.ipv4, Some(Ipv4Addr::LOCALHOST));
        let r2 = resolve_interface(&Interface::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))).unwrap();
        assert_eq!(r2.index, r.index);
        assert!(matches!(
            resolve_interface(&Interface::Name("nakcast-nope0".into())),
            Err(TransportError::InterfaceNotFound { .. })
        ));
    }
}
