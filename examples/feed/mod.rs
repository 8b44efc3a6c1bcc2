//! Shared by the examples: a synthetic market-data feed in a compact fixed-layout binary
//! encoding, a deterministic generator for it, a top-of-book that consumes it, and a tiny
//! `--name value` argument parser (std only).
//!
//! Each example includes this file with `#[path = "feed/mod.rs"] mod feed;` and uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Message kind byte of a quote.
pub const KIND_QUOTE: u8 = 1;
/// Message kind byte of a trade.
pub const KIND_TRADE: u8 = 2;

/// Quote flag: the bid side is present.
pub const FLAG_BID: u8 = 1;
/// Quote flag: the ask side is present.
pub const FLAG_ASK: u8 = 2;
/// Quote flag: part of a periodic snapshot round (always with both sides).
pub const FLAG_SNAPSHOT: u8 = 4;

/// Encoded size of a quote.
pub const QUOTE_LEN: usize = 40;
/// Encoded size of a trade.
pub const TRADE_LEN: usize = 32;

/// A quote: one or both sides of an instrument's best bid and offer.
///
/// Layout (little-endian, 40 bytes):
/// ```text
/// 0      kind = 1          u8
/// 1      flags             u8   FLAG_BID | FLAG_ASK | FLAG_SNAPSHOT
/// 2..4   instrument        u16
/// 4..8   version           u32  +1 per quote of this instrument (within a session)
/// 8..16  timestamp_ns      u64  send time (the producer chooses the clock)
/// 16..24 bid_px            i64  price in 1e-4 units (0 when the bid is absent)
/// 24..28 bid_qty           u32
/// 28..36 ask_px            i64
/// 36..40 ask_qty           u32
/// ```
/// A *full* quote has both sides and makes the instrument's book valid; a partial one
/// (one side) only updates a book that is already valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quote {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Instrument id.
    pub instrument: u16,
    /// Per-instrument quote counter: a consumer that sees a jump missed a quote.
    pub version: u32,
    /// Send time in nanoseconds (epoch chosen by the producer).
    pub timestamp_ns: u64,
    /// Best bid price, 1e-4 units.
    pub bid_px: i64,
    /// Best bid size.
    pub bid_qty: u32,
    /// Best ask price, 1e-4 units.
    pub ask_px: i64,
    /// Best ask size.
    pub ask_qty: u32,
}

impl Quote {
    /// Whether both sides are present.
    pub fn is_full(&self) -> bool {
        self.flags & (FLAG_BID | FLAG_ASK) == FLAG_BID | FLAG_ASK
    }

    /// Encode into `out` (no allocation); returns the encoded bytes.
    pub fn encode<'a>(&self, out: &'a mut [u8; QUOTE_LEN]) -> &'a [u8] {
        out[0] = KIND_QUOTE;
        out[1] = self.flags;
        out[2..4].copy_from_slice(&self.instrument.to_le_bytes());
        out[4..8].copy_from_slice(&self.version.to_le_bytes());
        out[8..16].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        out[16..24].copy_from_slice(&self.bid_px.to_le_bytes());
        out[24..28].copy_from_slice(&self.bid_qty.to_le_bytes());
        out[28..36].copy_from_slice(&self.ask_px.to_le_bytes());
        out[36..40].copy_from_slice(&self.ask_qty.to_le_bytes());
        &out[..]
    }
}

/// A trade.
///
/// Layout (little-endian, 32 bytes):
/// ```text
/// 0      kind = 2          u8
/// 1      side              u8   1 = buyer aggressed, 2 = seller aggressed
/// 2..4   instrument        u16
/// 4..8   trade_id          u32  +1 per trade of this instrument (within a session)
/// 8..16  timestamp_ns      u64
/// 16..24 price             i64  1e-4 units
/// 24..28 qty               u32
/// 28..32 reserved          zero
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trade {
    /// 1 = buy, 2 = sell.
    pub side: u8,
    /// Instrument id.
    pub instrument: u16,
    /// Per-instrument trade counter.
    pub trade_id: u32,
    /// Send time in nanoseconds.
    pub timestamp_ns: u64,
    /// Price, 1e-4 units.
    pub price: i64,
    /// Size.
    pub qty: u32,
}

impl Trade {
    /// Encode into `out` (no allocation); returns the encoded bytes.
    pub fn encode<'a>(&self, out: &'a mut [u8; TRADE_LEN]) -> &'a [u8] {
        out[0] = KIND_TRADE;
        out[1] = self.side;
        out[2..4].copy_from_slice(&self.instrument.to_le_bytes());
        out[4..8].copy_from_slice(&self.trade_id.to_le_bytes());
        out[8..16].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        out[16..24].copy_from_slice(&self.price.to_le_bytes());
        out[24..28].copy_from_slice(&self.qty.to_le_bytes());
        out[28..32].fill(0);
        &out[..]
    }
}

/// A decoded feed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMsg {
    /// A quote.
    Quote(Quote),
    /// A trade.
    Trade(Trade),
}

impl FeedMsg {
    /// The instrument the message is about.
    pub fn instrument(&self) -> u16 {
        match self {
            FeedMsg::Quote(q) => q.instrument,
            FeedMsg::Trade(t) => t.instrument,
        }
    }

    /// The send timestamp.
    pub fn timestamp_ns(&self) -> u64 {
        match self {
            FeedMsg::Quote(q) => q.timestamp_ns,
            FeedMsg::Trade(t) => t.timestamp_ns,
        }
    }

    /// Encode into `buf` (no allocation); returns the encoded bytes.
    pub fn encode<'a>(&self, buf: &'a mut [u8; QUOTE_LEN]) -> &'a [u8] {
        match self {
            FeedMsg::Quote(q) => q.encode(buf),
            FeedMsg::Trade(t) => {
                let mut tmp = [0u8; TRADE_LEN];
                t.encode(&mut tmp);
                buf[..TRADE_LEN].copy_from_slice(&tmp);
                &buf[..TRADE_LEN]
            }
        }
    }

    /// Decode one message (no allocation).
    pub fn decode(b: &[u8]) -> Result<FeedMsg, DecodeError> {
        let kind = *b.first().ok_or(DecodeError::Length(0))?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let i64_at = |i: usize| i64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        match kind {
            KIND_QUOTE if b.len() == QUOTE_LEN => Ok(FeedMsg::Quote(Quote {
                flags: b[1],
                instrument: u16_at(2),
                version: u32_at(4),
                timestamp_ns: u64_at(8),
                bid_px: i64_at(16),
                bid_qty: u32_at(24),
                ask_px: i64_at(28),
                ask_qty: u32_at(36),
            })),
            KIND_TRADE if b.len() == TRADE_LEN => Ok(FeedMsg::Trade(Trade {
                side: b[1],
                instrument: u16_at(2),
                trade_id: u32_at(4),
                timestamp_ns: u64_at(8),
                price: i64_at(16),
                qty: u32_at(24),
            })),
            KIND_QUOTE | KIND_TRADE => Err(DecodeError::Length(b.len())),
            other => Err(DecodeError::Kind(other)),
        }
    }
}

/// Why a payload is not a feed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Wrong length for its kind.
    Length(usize),
    /// Unknown kind byte.
    Kind(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Length(n) => write!(f, "bad message length {n}"),
            DecodeError::Kind(k) => write!(f, "unknown message kind {k}"),
        }
    }
}

/// A small deterministic PRNG (xorshift64*): the feed is reproducible from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One instrument on the producer side.
#[derive(Clone, Copy, Debug)]
struct Instrument {
    mid: i64,
    half_spread: i64,
    bid_qty: u32,
    ask_qty: u32,
    version: u32,
    trades: u32,
}

/// Produces a plausible feed: random-walk mid prices, mostly one-sided quote updates, some
/// full quotes and trades, and full snapshot quotes on demand.
#[derive(Clone, Debug)]
pub struct Generator {
    instruments: Vec<Instrument>,
    rng: Rng,
}

impl Generator {
    /// `n` instruments (1..=65536), initial prices from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let instruments = (0..n.clamp(1, 1 << 16))
            .map(|_| Instrument {
                mid: 100_000 + rng.below(50_000_000) as i64,
                half_spread: 1 + rng.below(20) as i64,
                bid_qty: 100 * (1 + rng.below(50) as u32),
                ask_qty: 100 * (1 + rng.below(50) as u32),
                version: 0,
                trades: 0,
            })
            .collect();
        Generator { instruments, rng }
    }

    /// Number of instruments.
    pub fn len(&self) -> usize {
        self.instruments.len()
    }

    /// The next market event: 70% one-sided quote updates, 10% full quotes, 20% trades.
    pub fn next(&mut self, timestamp_ns: u64) -> FeedMsg {
        let id = self.rng.below(self.instruments.len() as u64) as usize;
        let roll = self.rng.below(100);
        let step = self.rng.below(5) as i64 - 2;
        let qty = 100 * (1 + self.rng.below(50) as u32);
        let inst = &mut self.instruments[id];
        if roll < 20 {
            inst.trades = inst.trades.wrapping_add(1);
            let buy = qty.is_multiple_of(200);
            return FeedMsg::Trade(Trade {
                side: if buy { 1 } else { 2 },
                instrument: id as u16,
                trade_id: inst.trades,
                timestamp_ns,
                price: if buy {
                    inst.mid + inst.half_spread
                } else {
                    inst.mid - inst.half_spread
                },
                qty: qty / 2,
            });
        }
        inst.mid = (inst.mid + step).max(inst.half_spread + 1);
        let flags = if roll < 30 {
            inst.bid_qty = qty;
            inst.ask_qty = qty.rotate_left(3) % 5000 + 100;
            FLAG_BID | FLAG_ASK
        } else if roll < 65 {
            inst.bid_qty = qty;
            FLAG_BID
        } else {
            inst.ask_qty = qty;
            FLAG_ASK
        };
        FeedMsg::Quote(self.quote(id, flags, timestamp_ns))
    }

    /// A full quote of instrument `id` for a snapshot round.
    pub fn snapshot(&mut self, id: usize, timestamp_ns: u64) -> FeedMsg {
        FeedMsg::Quote(self.quote(id, FLAG_BID | FLAG_ASK | FLAG_SNAPSHOT, timestamp_ns))
    }

    fn quote(&mut self, id: usize, flags: u8, timestamp_ns: u64) -> Quote {
        let inst = &mut self.instruments[id];
        inst.version = inst.version.wrapping_add(1);
        let bid = flags & FLAG_BID != 0;
        let ask = flags & FLAG_ASK != 0;
        Quote {
            flags,
            instrument: id as u16,
            version: inst.version,
            timestamp_ns,
            bid_px: if bid { inst.mid - inst.half_spread } else { 0 },
            bid_qty: if bid { inst.bid_qty } else { 0 },
            ask_px: if ask { inst.mid + inst.half_spread } else { 0 },
            ask_qty: if ask { inst.ask_qty } else { 0 },
        }
    }
}

/// What a consumer knows about one instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// No full quote seen yet (since joining or since the publisher restarted).
    #[default]
    Unknown,
    /// Every quote since the last full one was applied.
    Valid,
    /// Data may have been lost since the last full quote: not to be trusted until the
    /// next full quote.
    Stale,
}

/// Top of book of one instrument.
#[derive(Clone, Copy, Debug, Default)]
pub struct Level {
    /// Whether the values can be trusted.
    pub state: State,
    /// Version of the last quote applied.
    pub version: u32,
    /// Best bid price (1e-4 units).
    pub bid_px: i64,
    /// Best bid size.
    pub bid_qty: u32,
    /// Best ask price (1e-4 units).
    pub ask_px: i64,
    /// Best ask size.
    pub ask_qty: u32,
    /// Last trade price (1e-4 units).
    pub last_px: i64,
    /// Traded volume seen.
    pub volume: u64,
}

/// A top-of-book per instrument, with the bookkeeping a real consumer needs around loss.
#[derive(Clone, Debug, Default)]
pub struct Book {
    levels: Vec<Level>,
    /// Quotes applied.
    pub quotes: u64,
    /// Of which full quotes from snapshot rounds.
    pub snapshot_quotes: u64,
    /// Trades applied.
    pub trades: u64,
    /// One-sided quotes ignored because their instrument was unknown or stale.
    pub ignored: u64,
    /// Quotes whose version did not follow the previous one on a valid instrument: a
    /// message was missed without the book being told. Must stay 0.
    pub inconsistent: u64,
    /// Instruments marked stale by losses (one per instrument per loss).
    pub stale_marks: u64,
    /// Instruments that went from stale back to valid on a full quote.
    pub recovered: u64,
    /// Times the book was rebuilt from scratch (publisher restarts).
    pub rebuilds: u64,
    /// Payloads that were not feed messages.
    pub bad_messages: u64,
}

impl Book {
    /// An empty book sized for `instruments` (it grows if more appear).
    pub fn new(instruments: usize) -> Self {
        Book {
            levels: vec![Level::default(); instruments],
            ..Book::default()
        }
    }

    /// Apply one payload from the feed.
    pub fn apply_payload(&mut self, payload: &[u8]) {
        match FeedMsg::decode(payload) {
            Ok(m) => self.apply(&m),
            Err(_) => self.bad_messages += 1,
        }
    }

    /// Apply one decoded message.
    pub fn apply(&mut self, m: &FeedMsg) {
        let id = m.instrument() as usize;
        if id >= self.levels.len() {
            self.levels.resize(id + 1, Level::default());
        }
        let level = &mut self.levels[id];
        match m {
            FeedMsg::Trade(t) => {
                self.trades += 1;
                level.last_px = t.price;
                level.volume += u64::from(t.qty);
            }
            FeedMsg::Quote(q) => {
                self.quotes += 1;
                if q.flags & FLAG_SNAPSHOT != 0 {
                    self.snapshot_quotes += 1;
                }
                if q.is_full() {
                    if level.state == State::Valid && q.version != level.version.wrapping_add(1) {
                        self.inconsistent += 1;
                    }
                    if level.state == State::Stale {
                        self.recovered += 1;
                    }
                    level.state = State::Valid;
                    level.bid_px = q.bid_px;
                    level.bid_qty = q.bid_qty;
                    level.ask_px = q.ask_px;
                    level.ask_qty = q.ask_qty;
                } else if level.state == State::Valid {
                    if q.version != level.version.wrapping_add(1) {
                        // Never expected: a loss is always reported before later messages.
                        self.inconsistent += 1;
                        level.state = State::Stale;
                        return;
                    }
                    if q.flags & FLAG_BID != 0 {
                        level.bid_px = q.bid_px;
                        level.bid_qty = q.bid_qty;
                    }
                    if q.flags & FLAG_ASK != 0 {
                        level.ask_px = q.ask_px;
                        level.ask_qty = q.ask_qty;
                    }
                } else {
                    self.ignored += 1;
                    return;
                }
                level.version = q.version;
            }
        }
    }

    /// Some messages will never arrive and we cannot know which instruments they were
    /// about: every valid instrument becomes stale until its next full quote.
    pub fn mark_all_stale(&mut self) {
        for l in &mut self.levels {
            if l.state == State::Valid {
                l.state = State::Stale;
                self.stale_marks += 1;
            }
        }
    }

    /// The publisher restarted: its new session starts from scratch (versions included),
    /// so forget everything and rebuild from its full quotes.
    pub fn rebuild(&mut self) {
        for l in &mut self.levels {
            *l = Level::default();
        }
        self.rebuilds += 1;
    }

    /// Instruments per state: (valid, stale, unknown).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.levels
            .iter()
            .fold((0, 0, 0), |(v, s, u), l| match l.state {
                State::Valid => (v + 1, s, u),
                State::Stale => (v, s + 1, u),
                State::Unknown => (v, s, u + 1),
            })
    }

    /// The level of instrument `id`.
    pub fn level(&self, id: usize) -> Option<&Level> {
        self.levels.get(id)
    }
}

/// Formats a price in 1e-4 units as a decimal.
pub fn px(p: i64) -> String {
    format!("{}.{:04}", p / 10_000, (p % 10_000).abs())
}

/// `--name value` / `--name=value` command-line options (std only), with `--help`.
pub struct Args {
    values: HashMap<String, String>,
    usage: &'static str,
}

impl Args {
    /// Parse the process arguments; prints `usage` and exits on `--help` or a malformed
    /// argument.
    pub fn parse(usage: &'static str) -> Args {
        let mut values = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(name) = a.strip_prefix("--") else {
                Self::fail(usage, &format!("unexpected argument {a:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => match it.next() {
                    Some(v) => (name.to_string(), v),
                    None => Self::fail(usage, &format!("--{name} needs a value")),
                },
            };
            values.insert(name, value);
        }
        Args { values, usage }
    }

    /// The value of `--name`, or `default`.
    pub fn get<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.values.remove(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|e| {
                Self::fail(self.usage, &format!("--{name} {v:?}: {e}"));
            }),
        }
    }

    /// Fail on options nobody asked for (typos).
    pub fn finish(self) {
        if let Some(name) = self.values.keys().next() {
            Self::fail(self.usage, &format!("unknown option --{name}"));
        }
    }

    fn fail(usage: &str, msg: &str) -> ! {
        eprintln!("error: {msg}\n\n{usage}");
        std::process::exit(2);
    }
}
