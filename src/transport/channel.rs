//! Where a stream lives: group (or publisher address), port, interface and stream id, with a
//! compact string form `udp://239.255.0.1:40456?interface=127.0.0.1&stream=7`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::socket::Interface;

/// A stream's address.
///
/// With a multicast `endpoint`, the publisher sends to the group and subscribers join it.
/// With a unicast `endpoint` (networks without multicast), the publisher listens there and
/// each subscriber registers with it; frames are sent to every registered subscriber.
///
/// ```
/// # use nakcast::{Channel, Interface};
/// let channel: Channel = "udp://239.255.0.1:40456?interface=127.0.0.1&stream=7".parse()?;
/// assert!(channel.is_multicast());
/// assert_eq!(channel.stream, 7);
/// assert_eq!(channel.to_string().parse::<Channel>()?, channel); // round-trips
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Multicast group and port, or the publisher's unicast address.
    pub endpoint: SocketAddr,
    /// Interface to send and join on (address or name); `Any` lets the routing table choose.
    #[serde(default)]
    pub interface: Interface,
    /// Stream id.
    #[serde(default)]
    pub stream: u32,
}

impl Channel {
    /// A multicast or unicast channel on `endpoint`, stream 0, any interface.
    ///
    /// ```
    /// # use nakcast::{Channel, Interface};
    /// let channel = Channel::new("239.255.0.1:40456".parse()?);
    /// assert_eq!((channel.stream, channel.interface), (0, Interface::Any));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(endpoint: SocketAddr) -> Self {
        Self {
            endpoint,
            interface: Interface::Any,
            stream: 0,
        }
    }

    /// The same channel on `interface`.
    ///
    /// ```
    /// # use nakcast::{Channel, Interface};
    /// let channel = Channel::new("239.255.0.1:40456".parse()?).with_interface("eth0".parse()?);
    /// assert_eq!(channel.interface, Interface::Name("eth0".into()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_interface(mut self, interface: Interface) -> Self {
        self.interface = interface;
        self
    }

    /// The same channel with stream id `stream`.
    ///
    /// ```
    /// # use nakcast::{Channel, Interface};
    /// let channel = Channel::new("239.255.0.1:40456".parse()?).with_stream(7);
    /// assert_eq!(channel.to_string(), "udp://239.255.0.1:40456?stream=7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_stream(mut self, stream: u32) -> Self {
        self.stream = stream;
        self
    }

    /// Whether the endpoint is a multicast group.
    ///
    /// ```
    /// # use nakcast::{Channel, Interface};
    /// assert!("udp://239.255.0.1:40456".parse::<Channel>()?.is_multicast());
    /// assert!(!"udp://10.0.0.5:40456".parse::<Channel>()?.is_multicast()); // unicast mode
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_multicast(&self) -> bool {
        self.endpoint.ip().is_multicast()
    }
}

/// Why a channel string did not parse.
///
/// ```
/// # use nakcast::{Channel, Interface};
/// let err = "udp://239.255.0.1".parse::<Channel>().unwrap_err(); // no port
/// assert!(err.to_string().contains("expected udp://ADDR:PORT"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelParseError(String);

impl fmt::Display for ChannelParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; expected udp://ADDR:PORT[?interface=IP|NAME][&stream=ID], e.g. \
             udp://239.255.0.1:40456?interface=127.0.0.1&stream=7",
            self.0
        )
    }
}

impl std::error::Error for ChannelParseError {}

impl FromStr for Channel {
    type Err = ChannelParseError;

    /// Parse `udp://ADDR:PORT[?interface=..][&stream=..]` (the `udp://` prefix is optional;
    /// IPv6 addresses go in brackets).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.trim().strip_prefix("udp://").unwrap_or(s.trim());
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let endpoint: SocketAddr = addr
            .parse()
            .map_err(|_| ChannelParseError(format!("bad address {addr:?}")))?;
        let mut ch = Channel::new(endpoint);
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ChannelParseError(format!("parameter {kv:?} has no value")))?;
            match k {
                "interface" => ch.interface = v.parse().unwrap_or(Interface::Any),
                "stream" => {
                    ch.stream = v
                        .parse()
                        .map_err(|_| ChannelParseError(format!("bad stream id {v:?}")))?
                }
                _ => return Err(ChannelParseError(format!("unknown parameter {k:?}"))),
            }
        }
        Ok(ch)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp://{}?stream={}", self.endpoint, self.stream)?;
        if self.interface != Interface::Any {
            write!(f, "&interface={}", self.interface)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_channel_strings() {
        let c: Channel = "udp://239.255.0.1:40456?interface=127.0.0.1&stream=7"
            .parse()
            .unwrap();
        assert_eq!(c.endpoint, "239.255.0.1:40456".parse().unwrap());
        assert_eq!(c.interface, Interface::Addr("127.0.0.1".parse().unwrap()));
        assert_eq!(c.stream, 7);
        assert!(c.is_multicast());
        assert_eq!(c.to_string().parse::<Channel>().unwrap(), c);
        let u: Channel = "[::1]:9000?interface=lo".parse().unwrap();
        assert_eq!(u.interface, Interface::Name("lo".into()));
        assert!(!u.is_multicast());
        assert!("udp://239.1.1.1".parse::<Channel>().is_err());
        assert!("udp://239.1.1.1:1?stream=x".parse::<Channel>().is_err());
        assert!("udp://239.1.1.1:1?colour=red".parse::<Channel>().is_err());
    }
}
