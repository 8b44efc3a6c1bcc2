//! Optional frame authentication: a shared key, named by a key id, seals every frame with a
//! keyed BLAKE3 MAC in a 20-byte trailer. Off by default.
//!
//! ```text
//! offset        size field
//!  0             4   crc32     CRC-32 of bytes 4..len (trailer included), as for any frame
//!  4            20   header    flags bit 1 (FLAG_AUTH) set
//! 24             .   body      unchanged
//! len - 20       4   key_id    u32 LE: which shared key sealed the frame
//! len - 16      16   mac       BLAKE3 keyed hash of bytes 4..len-16, first 16 bytes
//! ```
//!
//! The MAC covers everything after the CRC field: the header (so the session, stream, type
//! and flags, `FLAG_AUTH` itself included, cannot be changed or stripped), the body and the
//! key id. The CRC is computed last and checked first: garbled datagrams are dropped for
//! the cost of a CRC before any MAC is computed.
//!
//! Keys rotate by id: a [`Keyring`] seals with one key (its current key) and verifies with
//! that one and any number of further accepted keys. MAC keys are derived from the
//! configured 32-byte secrets with BLAKE3's `derive_key` and a context string of this
//! protocol, so a secret shared with another use of BLAKE3 does not yield related MACs.
//!
//! Everything here is pure: no clock, no RNG, no I/O, and sealing and opening allocate
//! nothing. docs/SECURITY.md has the threat model and what this does and does not defend.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::{
    DecodeError, EncodeError, FLAG_AUTH, Frame, HEADER_LEN, Header, read_u16, read_u32, write_u16,
    write_u32,
};

/// Bytes of the authentication trailer: key id (4) and MAC (16).
pub const AUTH_TRAILER_LEN: usize = 4 + MAC_LEN;
/// Bytes of the MAC: BLAKE3's 32-byte output truncated to 128 bits (a forgery succeeds with
/// probability 2^-128 per try).
pub const MAC_LEN: usize = 16;
/// Bytes of a shared secret.
pub const SECRET_LEN: usize = 32;

/// BLAKE3 `derive_key` context for frame MAC keys (globally unique, hard-coded, as BLAKE3
/// asks of contexts).
const MAC_KEY_CONTEXT: &str = "nakcast 2026-11 frame MAC v1";

/// A 32-byte shared secret. Written as 64 hex digits in configuration files; its `Debug`
/// output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSecret(pub [u8; SECRET_LEN]);

impl AuthSecret {
    /// Parse 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, AuthKeyError> {
        let s = s.trim();
        if s.len() != 2 * SECRET_LEN {
            return Err(AuthKeyError::Length(s.len()));
        }
        let mut out = [0u8; SECRET_LEN];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(AuthKeyError::NotHex)?;
            let lo = hex_digit(pair[1]).ok_or(AuthKeyError::NotHex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Self(out))
    }

    /// The secret as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthSecret(<redacted>)")
    }
}

impl Serialize for AuthSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for AuthSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a secret could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKeyError {
    /// Not 64 hex digits long (the length found).
    Length(usize),
    /// A character that is not a hex digit.
    NotHex,
}

impl fmt::Display for AuthKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(n) => write!(f, "a key is 64 hex digits (32 bytes), not {n}"),
            Self::NotHex => f.write_str("a key is hex digits only (0-9, a-f)"),
        }
    }
}

impl std::error::Error for AuthKeyError {}

/// One shared key and the id frames name it by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthKey {
    /// Key id carried in every frame this key seals.
    pub id: u32,
    /// The shared secret.
    pub secret: AuthSecret,
}

impl AuthKey {
    /// A key with id `id` and secret `secret`.
    pub fn new(id: u32, secret: [u8; SECRET_LEN]) -> Self {
        Self {
            id,
            secret: AuthSecret(secret),
        }
    }
}

/// Frame authentication settings, in both `PublisherConfig` and `ReceiverConfig`. The
/// default is off: no trailer is added and none is accepted.
///
/// Rotation: give every node the new key in `accept`, then make it the `key` of every node
/// (senders switch while every receiver already verifies both), then drop the old one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// The current key: seals every frame this node sends, and verifies. `None` (default):
    /// authentication off, and `accept` is ignored.
    pub key: Option<AuthKey>,
    /// Further keys accepted when verifying (rotation). An entry with the id of `key` is
    /// ignored (`key` wins).
    pub accept: Vec<AuthKey>,
    /// Also accept frames without a trailer (for rolling authentication out node by node).
    /// This gives up all protection against forged frames while it is set.
    pub accept_unauthenticated: bool,
}

impl AuthConfig {
    /// Authentication with `key` as the only key.
    pub fn with_key(id: u32, secret: [u8; SECRET_LEN]) -> Self {
        Self {
            key: Some(AuthKey::new(id, secret)),
            ..Self::default()
        }
    }

    /// Whether frames are sealed (a current key is set).
    pub fn is_on(&self) -> bool {
        self.key.is_some()
    }

    /// Whether frames without a valid trailer are refused.
    pub fn is_required(&self) -> bool {
        self.is_on() && !self.accept_unauthenticated
    }

    /// Bytes each sealed frame grows by: [`AUTH_TRAILER_LEN`] when on, else 0.
    pub fn trailer_len(&self) -> usize {
        if self.is_on() { AUTH_TRAILER_LEN } else { 0 }
    }
}

/// Why a frame failed authentication. Such frames are dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No trailer, and this node requires one.
    Missing,
    /// The trailer names a key id this node does not hold (or the node holds no key).
    UnknownKey(u32),
    /// The MAC does not match: forged, modified, or sealed with another secret under the
    /// same id.
    BadMac,
    /// The `FLAG_AUTH` bit is set but the frame is too short to hold a trailer.
    Truncated,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("frame not authenticated, and authentication is required"),
            Self::UnknownKey(id) => write!(f, "frame sealed with unknown key id {id}"),
            Self::BadMac => f.write_str("frame MAC does not match"),
            Self::Truncated => f.write_str("frame too short for its authentication trailer"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Why [`Keyring::open`] refused a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not a well-formed frame (CRC, version, type, layout).
    Decode(DecodeError),
    /// Well-formed but not authentic (or not authenticated where that is required).
    Auth(AuthError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => e.fmt(f),
            Self::Auth(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<DecodeError> for OpenError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

/// A derived MAC key and its id.
#[derive(Clone)]
struct MacKey {
    id: u32,
    key: [u8; 32],
}

impl MacKey {
    fn derive(k: &AuthKey) -> Self {
        Self {
            id: k.id,
            key: blake3::derive_key(MAC_KEY_CONTEXT, &k.secret.0),
        }
    }

    /// The MAC of `covered` (bytes 4.. of the frame, up to and including the key id).
    #[inline]
    fn mac(&self, covered: &[u8]) -> [u8; MAC_LEN] {
        let full = blake3::keyed_hash(&self.key, covered);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
        out
    }
}

/// The runtime form of an [`AuthConfig`]: derived MAC keys, ready to seal and open frames.
/// Built once per publisher or receiver; sealing and opening allocate nothing.
#[derive(Clone)]
pub struct Keyring {
    seal: Option<MacKey>,
    /// The current key first, then the accepted ones (ids unique).
    verify: Vec<MacKey>,
    require: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("seal_id", &self.seal.as_ref().map(|k| k.id))
            .field(
                "verify_ids",
                &self.verify.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .field("require", &self.require)
            .finish()
    }
}

impl Keyring {
    /// The keyring for `cfg` (which may be off: then frames are neither sealed nor
    /// required to be, and any sealed frame is refused as [`AuthError::UnknownKey`]).
    pub fn new(cfg: &AuthConfig) -> Self {
        let Some(key) = &cfg.key else {
            return Self {
                seal: None,
                verify: Vec::new(),
                require: false,
            };
        };
        let mut verify = vec![MacKey::derive(key)];
        for k in &cfg.accept {
            if verify.iter().all(|v| v.id != k.id) {
                verify.push(MacKey::derive(k));
            }
        }
        Self {
            seal: Some(MacKey::derive(key)),
            verify,
            require: !cfg.accept_unauthenticated,
        }
    }

    /// Whether frames are sealed.
    pub fn is_on(&self) -> bool {
        self.seal.is_some()
    }

    /// Whether frames without a valid trailer are refused.
    pub fn is_required(&self) -> bool {
        self.require
    }

    /// Bytes [`seal`](Self::seal) appends: [`AUTH_TRAILER_LEN`] when on, else 0.
    pub fn trailer_len(&self) -> usize {
        if self.is_on() { AUTH_TRAILER_LEN } else { 0 }
    }

    /// Seal the encoded frame `buf[..len]`: set `FLAG_AUTH`, append the key id and MAC
    /// after it, and rewrite the CRC. Returns the new length. Without a current key the
    /// frame is left as it is and `len` is returned.
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        let Some(key) = &self.seal else {
            return Ok(len);
        };
        let total = len + AUTH_TRAILER_LEN;
        if len < HEADER_LEN || buf.len() < total {
            return Err(EncodeError::BufferTooSmall);
        }
        let flags = read_u16(buf, 6) | FLAG_AUTH;
        write_u16(buf, 6, flags);
        write_u32(buf, len, key.id);
        let mac = key.mac(&buf[4..len + 4]);
        buf[len + 4..total].copy_from_slice(&mac);
        let crc = crc32fast::hash(&buf[4..total]);
        write_u32(buf, 0, crc);
        Ok(total)
    }

    /// Check and decode a datagram: length and CRC first, then version and type, then the
    /// trailer (when `FLAG_AUTH` is set: key id known, MAC matches; when it is not: whether
    /// unauthenticated frames are accepted), and only then the body. Nothing but the
    /// header's CRC-checked bytes is looked at before the MAC matches.
    #[inline]
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<Frame<'a>, OpenError> {
        let header = Header::parse(bytes)?;
        let body = self.verify(&header, bytes).map_err(OpenError::Auth)?;
        Ok(Frame::parse_body(header, body)?)
    }

    /// The frame without its trailer, if authentic (or if unauthenticated and allowed).
    #[inline]
    fn verify<'a>(&self, header: &Header, bytes: &'a [u8]) -> Result<&'a [u8], AuthError> {
        if header.flags & FLAG_AUTH == 0 {
            return if self.require {
                Err(AuthError::Missing)
            } else {
                Ok(bytes)
            };
        }
        let len = bytes.len();
        if len < HEADER_LEN + AUTH_TRAILER_LEN {
            return Err(AuthError::Truncated);
        }
        let body_end = len - AUTH_TRAILER_LEN;
        let id = read_u32(bytes, body_end);
        let key = self
            .verify
            .iter()
            .find(|k| k.id == id)
            .ok_or(AuthError::UnknownKey(id))?;
        let mac = key.mac(&bytes[4..len - MAC_LEN]);
        let got: &[u8; MAC_LEN] = bytes[len - MAC_LEN..].try_into().expect("16 bytes");
        if constant_time_eq::constant_time_eq_16(&mac, got) {
            Ok(&bytes[..body_end])
        } else {
            Err(AuthError::BadMac)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::{self, DataFrameWriter, FRAG_BEGIN, FRAG_END, FrameType, SeqRange};

    const K1: [u8; 32] = [0x11; 32];
    const K2: [u8; 32] = [0x22; 32];

    fn data(buf: &mut [u8]) -> usize {
        let mut w = DataFrameWriter::begin(buf, 7, 0xABCD, 100).unwrap();
        w.push(buf, FRAG_BEGIN | FRAG_END, b"hello").unwrap();
        w.finish(buf)
    }

    fn ring(id: u32, secret: [u8; 32]) -> Keyring {
        Keyring::new(&AuthConfig::with_key(id, secret))
    }

    #[test]
    fn sealed_frame_opens_and_keeps_its_content() {
        let k = ring(1, K1);
        let mut buf = [0u8; 128];
        let len = data(&mut buf);
        let sealed = k.seal(&mut buf, len).unwrap();
        assert_eq!(sealed, len + AUTH_TRAILER_LEN);
        // The CRC covers the trailer: a plain CRC check passes.
        assert!(Header::parse(&buf[..sealed]).is_ok());
        let Frame::Data(d) = k.open(&buf[..sealed]).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.first_seq, 100);
        assert_eq!(d.header.session, 0xABCD);
        assert_ne!(d.header.flags & FLAG_AUTH, 0);
        let frags: Vec<_> = d.fragments().collect();
        assert_eq!(frags.len(), 1);
        assert_eq!(frags[0].payload, b"hello");
        // A keyless decoder refuses it rather than read the trailer as content.
        assert_eq!(
            Frame::parse(&buf[..sealed]).unwrap_err(),
            DecodeError::TrailingBytes
        );
    }

    #[test]
    fn every_modified_byte_is_refused() {
        let k = ring(1, K1);
        let mut buf = [0u8; 128];
        let len = data(&mut buf);
        let sealed = k.seal(&mut buf, len).unwrap();
        for i in 4..sealed {
            for bit in [0x01u8, 0x80] {
                let mut m = buf[..sealed].to_vec();
                m[i] ^= bit;
                // A forger fixes the CRC: only the MAC (or key id lookup) stands in the way.
                wire::finish_frame(&mut m);
                let err = k.open(&m).unwrap_err();
                assert!(
                    matches!(
                        err,
                        OpenError::Auth(
                            AuthError::BadMac | AuthError::UnknownKey(_) | AuthError::Missing
                        ) | OpenError::Decode(_)
                    ),
                    "byte {i}: {err:?}"
                );
                if i >= HEADER_LEN {
                    // Body, key id and MAC bytes: the CRC is fixed and the header intact,
                    // so only authentication can refuse it.
                    assert!(matches!(err, OpenError::Auth(_)), "byte {i}: {err:?}");
                }
            }
        }
        // Without the CRC fixed, the cheap check refuses it before any MAC is computed.
        let mut m = buf[..sealed].to_vec();
        m[30] ^= 1;
        assert_eq!(
            k.open(&m).unwrap_err(),
            OpenError::Decode(DecodeError::BadCrc)
        );
    }

    #[test]
    fn forged_with_another_secret_or_key_id_is_refused() {
        let mine = ring(1, K1);
        let mut buf = [0u8; 128];
        let len = data(&mut buf);
        let forged = ring(1, K2).seal(&mut buf, len).unwrap();
        assert_eq!(
            mine.open(&buf[..forged]).unwrap_err(),
            OpenError::Auth(AuthError::BadMac)
        );
        let len = data(&mut buf);
        let other_id = ring(9, K1).seal(&mut buf, len).unwrap();
        assert_eq!(
            mine.open(&buf[..other_id]).unwrap_err(),
            OpenError::Auth(AuthError::UnknownKey(9))
        );
        // The same secret under another id is another key (the id is MACed): relabelling
        // the id of a genuine frame fails too.
        let len = data(&mut buf);
        let sealed = mine.seal(&mut buf, len).unwrap();
        let both = Keyring::new(&AuthConfig {
            key: Some(AuthKey::new(1, K1)),
            accept: vec![AuthKey::new(2, K1)],
            accept_unauthenticated: false,
        });
        let mut m = buf[..sealed].to_vec();
        write_u32(&mut m, len, 2);
        wire::finish_frame(&mut m);
        assert_eq!(
            both.open(&m).unwrap_err(),
            OpenError::Auth(AuthError::BadMac)
        );
    }

    #[test]
    fn stripping_the_trailer_does_not_help() {
        let k = ring(1, K1);
        let mut buf = [0u8; 128];
        let len = data(&mut buf);
        let sealed = k.seal(&mut buf, len).unwrap();
        let mut m = buf[..sealed - AUTH_TRAILER_LEN].to_vec();
        let flags = read_u16(&m, 6) & !FLAG_AUTH;
        write_u16(&mut m, 6, flags);
        wire::finish_frame(&mut m);
        assert_eq!(k.open(&m).unwrap_err(), OpenError::Auth(AuthError::Missing));
        // With the flag left set, the frame is too short or its MAC is garbage.
        let mut m = buf[..HEADER_LEN + 4].to_vec();
        wire::finish_frame(&mut m);
        assert_eq!(
            k.open(&m).unwrap_err(),
            OpenError::Auth(AuthError::Truncated)
        );
    }

    #[test]
    fn unauthenticated_frames_need_the_rollout_switch() {
        let mut buf = [0u8; 128];
        let len = data(&mut buf);
        let plain = &buf[..len];
        assert_eq!(
            ring(1, K1).open(plain).unwrap_err(),
            OpenError::Auth(AuthError::Missing)
        );
        let lenient = Keyring::new(&AuthConfig {
            accept_unauthenticated: true,
            ..AuthConfig::with_key(1, K1)
        });
        assert!(lenient.is_on() && !lenient.is_required());
        assert!(matches!(lenient.open(plain), Ok(Frame::Data(_))));
        // Off: plain frames pass, sealed ones are refused (nothing to verify them with).
        let off = Keyring::new(&AuthConfig::default());
        assert!(matches!(off.open(plain), Ok(Frame::Data(_))));
        assert_eq!(off.seal(&mut buf, len), Ok(len));
        let sealed = ring(1, K1).seal(&mut buf, len).unwrap();
        assert_eq!(
            off.open(&buf[..sealed]).unwrap_err(),
            OpenError::Auth(AuthError::UnknownKey(1))
        );
    }

    #[test]
    fn rotation_accepts_old_and_new_keys_and_seals_with_the_current() {
        let old = ring(1, K1);
        let new = ring(2, K2);
        let rotating = Keyring::new(&AuthConfig {
            key: Some(AuthKey::new(2, K2)),
            accept: vec![AuthKey::new(1, K1), AuthKey::new(2, K1)],
            accept_unauthenticated: false,
        });
        let mut buf = [0u8; 128];
        for sender in [&old, &new] {
            let len = data(&mut buf);
            let sealed = sender.seal(&mut buf, len).unwrap();
            assert!(rotating.open(&buf[..sealed]).is_ok());
        }
        // The current key wins over an accepted entry with its id; it seals.
        let len = data(&mut buf);
        let sealed = rotating.seal(&mut buf, len).unwrap();
        assert_eq!(read_u32(&buf, len), 2);
        assert!(new.open(&buf[..sealed]).is_ok());
        assert_eq!(
            old.open(&buf[..sealed]).unwrap_err(),
            OpenError::Auth(AuthError::UnknownKey(2))
        );
    }

    #[test]
    fn every_frame_type_seals_and_opens() {
        let k = ring(5, K1);
        let mut buf = [0u8; 2048];
        for ty in [
            FrameType::Heartbeat,
            FrameType::Close,
            FrameType::Nak,
            FrameType::Unavailable,
            FrameType::Status,
        ] {
            let len = match ty {
                FrameType::Heartbeat | FrameType::Close => {
                    wire::emit_control(&mut buf, ty, 1, 2, 10, 5).unwrap()
                }
                FrameType::Nak | FrameType::Unavailable => {
                    wire::emit_ranges(&mut buf, ty, 1, 2, &[SeqRange::new(3, 4); 64]).unwrap()
                }
                FrameType::Status => wire::emit_status(&mut buf, 1, 2, true, None).unwrap(),
                FrameType::Data => unreachable!(),
            };
            let sealed = k.seal(&mut buf, len).unwrap();
            let f = k.open(&buf[..sealed]).unwrap();
            assert_eq!(f.header().frame_type, ty);
            assert_eq!(f.header().session, 2);
        }
    }

    /// docs/PROTOCOL.md's worked example (§2.8), sealed with key id 1 and the secret
    /// 00 01 02 … 1f: the bytes docs/PROTOCOL.md §2.9 shows.
    #[test]
    fn sealed_fixture_bytes() {
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut buf = [0u8; 64];
        let mut w = DataFrameWriter::begin(&mut buf, 7, 0x1122_3344_5566_7788, 5).unwrap();
        w.push(&mut buf, FRAG_BEGIN | FRAG_END, b"hi").unwrap();
        let len = w.finish(&mut buf);
        assert_eq!(len, 42);
        let k = ring(1, secret);
        let sealed = k.seal(&mut buf, len).unwrap();
        let hex: String = buf[..sealed].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, FIXTURE_HEX);
        let mac = blake3::keyed_hash(
            &blake3::derive_key("nakcast 2026-11 frame MAC v1", &secret),
            &buf[4..46],
        );
        assert_eq!(&buf[46..62], &mac.as_bytes()[..16]);
    }

    const FIXTURE_HEX: &str = "df84a3b7010102000700000000000000887766554433221105000000000000000100000002000300686901000000de1cd18e9f1ddb4d26405d3c10b31158";

    #[test]
    fn seal_checks_the_buffer() {
        let k = ring(1, K1);
        let mut buf = [0u8; 128];
        let len = data(&mut buf);
        assert_eq!(
            k.seal(&mut buf[..len + 19], len),
            Err(EncodeError::BufferTooSmall)
        );
    }

    proptest::proptest! {
        /// Any change to a sealed frame, CRC fixed up, truncated or extended, is refused
        /// without a panic; only the untouched frame opens.
        #[test]
        fn tampered_frames_never_open(
            edits in proptest::collection::vec((0usize..200, 1u8..=255), 1..4),
            cut in 0usize..30,
            extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
        ) {
            let k = ring(1, K1);
            let mut buf = [0u8; 256];
            let len = data(&mut buf);
            let sealed = k.seal(&mut buf, len).unwrap();
            let mut m = buf[..sealed].to_vec();
            for (at, x) in edits {
                let at = 4 + at % (sealed - 4);
                m[at] ^= x;
            }
            m.truncate(sealed - cut.min(sealed - 4));
            m.extend_from_slice(&extra);
            wire::finish_frame(&mut m);
            let changed = m[4..] != buf[4..sealed];
            proptest::prop_assert_eq!(k.open(&m).is_ok(), !changed);
        }
    }

    #[test]
    fn secrets_parse_from_hex_and_never_print() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let s = AuthSecret::from_hex(&format!(" {hex}\n")).unwrap();
        assert_eq!(s.0[1], 0x11);
        assert_eq!(s.0[31], 0xFF);
        assert_eq!(s.to_hex(), hex.to_lowercase());
        assert_eq!(AuthSecret::from_hex("abc"), Err(AuthKeyError::Length(3)));
        assert_eq!(
            AuthSecret::from_hex(&"zz".repeat(32)),
            Err(AuthKeyError::NotHex)
        );
        let cfg = AuthConfig::with_key(3, s.0);
        assert!(!format!("{cfg:?}").contains("aabb"));
        assert!(!format!("{:?}", Keyring::new(&cfg)).contains("aabb"));
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(&hex.to_lowercase()), "{json}");
        let back: AuthConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let partial: AuthConfig = serde_json::from_str("{}").unwrap();
        assert!(!partial.is_on());
    }
}
