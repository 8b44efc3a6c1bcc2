//! The error type of the user-facing API.

use std::fmt;
use std::io;

use super::channel::ChannelParseError;
use super::socket::TransportError;

/// Why a `Publisher` or `Subscriber` could not be created or driven.
///
/// ```
/// # use nakcast::{Channel, Error, Subscriber, SubscriberOptions};
/// let channel: Channel = "udp://239.255.0.1:40456?interface=nakcast-nope0".parse()?;
/// match Subscriber::new(SubscriberOptions::new(channel)) {
///     Err(Error::Socket(e)) => eprintln!("{e}"), // names the interface and how to fix it
///     other => panic!("expected a socket error, got {:?}", other.err()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum Error {
    /// Socket set-up failed; the message says which address, interface or option, and how
    /// to fix it.
    Socket(TransportError),
    /// The channel string is malformed.
    Channel(ChannelParseError),
    /// A socket operation failed while running.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Socket(e) => write!(f, "{e}"),
            Error::Channel(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "socket I/O failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Socket(e) => Some(e),
            Error::Channel(e) => Some(e),
            Error::Io(e) => Some(e),
        }
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Error::Socket(e)
    }
}

impl From<ChannelParseError> for Error {
    fn from(e: ChannelParseError) -> Self {
        Error::Channel(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
