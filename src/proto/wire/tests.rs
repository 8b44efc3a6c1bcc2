use super::*;
use proptest::prelude::*;

fn data_frame(first_seq: u64, frags: &[(u8, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = DataFrameWriter::begin(&mut buf, 7, 0x1122_3344_5566_7788, first_seq).unwrap();
    for (flags, p) in frags {
        w.push(&mut buf, *flags, p).unwrap();
    }
    let len = w.finish(&mut buf);
    buf.truncate(len);
    buf
}

#[test]
fn data_fixture_bytes() {
    let f = data_frame(5, &[(FRAG_BEGIN | FRAG_END, b"hi")]);
    // Header after the CRC: version 1, type DATA, flags 0, stream 7, reserved, session.
    assert_eq!(&f[4..8], &[1, 1, 0, 0]);
    assert_eq!(&f[8..12], &7u32.to_le_bytes());
    assert_eq!(&f[12..16], &[0; 4]);
    assert_eq!(&f[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&f[24..32], &5u64.to_le_bytes());
    assert_eq!(&f[32..36], &[1, 0, 0, 0]);
    assert_eq!(&f[36..42], &[2, 0, 3, 0, b'h', b'i']);
    assert_eq!(&f[0..4], &crc32fast::hash(&f[4..]).to_le_bytes());
    assert_eq!(f.len(), 42);
}

#[test]
fn data_round_trip() {
    let f = data_frame(
        u64::MAX - 3,
        &[(FRAG_BEGIN, b"abc"), (0, b""), (FRAG_END, b"xyz")],
    );
    let Frame::Data(d) = Frame::parse(&f).unwrap() else {
        panic!("not data")
    };
    assert_eq!(d.first_seq, u64::MAX - 3);
    assert_eq!(d.end_seq(), u64::MAX);
    assert!(!d.is_retransmit());
    let frags: Vec<_> = d.fragments().collect();
    assert_eq!(frags.len(), 3);
    assert_eq!(
        frags[0],
        Fragment {
            seq: u64::MAX - 3,
            flags: FRAG_BEGIN,
            payload: b"abc"
        }
    );
    assert_eq!(frags[1].payload, b"");
    assert_eq!(frags[2].seq, u64::MAX - 1);
}

#[test]
fn retransmit_flag_refreshes_crc() {
    let mut f = data_frame(1, &[(FRAG_BEGIN | FRAG_END, b"x")]);
    set_retransmit(&mut f);
    let Frame::Data(d) = Frame::parse(&f).unwrap() else {
        panic!()
    };
    assert!(d.is_retransmit());
}

#[test]
fn control_and_ranges_round_trip() {
    let mut buf = [0u8; 64];
    let n = emit_control(&mut buf, FrameType::Heartbeat, 3, 9, 100, 40).unwrap();
    match Frame::parse(&buf[..n]).unwrap() {
        Frame::Heartbeat {
            header,
            next_seq,
            oldest_seq,
        } => {
            assert_eq!(
                (header.stream, header.session, next_seq, oldest_seq),
                (3, 9, 100, 40)
            );
        }
        other => panic!("{other:?}"),
    }
    let n = emit_control(&mut buf, FrameType::Close, 3, 9, 100, 100).unwrap();
    assert!(matches!(
        Frame::parse(&buf[..n]).unwrap(),
        Frame::Close { next_seq: 100, .. }
    ));

    let ranges = [SeqRange::new(1, 4), SeqRange::new(10, 11)];
    let mut buf = [0u8; 256];
    let n = emit_ranges(&mut buf, FrameType::Nak, 3, 9, &ranges).unwrap();
    let Frame::Nak(list) = Frame::parse(&buf[..n]).unwrap() else {
        panic!()
    };
    assert_eq!(list.iter().collect::<Vec<_>>(), ranges);
    let n = emit_ranges(&mut buf, FrameType::Unavailable, 3, 9, &ranges[..1]).unwrap();
    assert!(matches!(Frame::parse(&buf[..n]).unwrap(), Frame::Unavailable(l) if l.len() == 1));
}

#[test]
fn status_fixture_bytes_and_round_trip() {
    let mut buf = [0u8; 64];
    let n = emit_status(&mut buf, 7, 0x1122_3344_5566_7788, false, None).unwrap();
    assert_eq!(n, HEADER_LEN + STATUS_BODY_LEN);
    let f = &buf[..n];
    // Header after the CRC: version 1, type STATUS (6), flags 0, stream 7, reserved, session.
    assert_eq!(&f[4..8], &[1, 6, 0, 0]);
    assert_eq!(&f[8..12], &7u32.to_le_bytes());
    assert_eq!(&f[12..16], &[0; 4]);
    assert_eq!(&f[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&f[24..40], &[0; 16]);
    assert_eq!(&f[0..4], &crc32fast::hash(&f[4..]).to_le_bytes());
    match Frame::parse(f).unwrap() {
        Frame::Status {
            header,
            leaving,
            flow,
        } => {
            assert_eq!(header.frame_type, FrameType::Status);
            assert_eq!(
                (header.stream, header.session, leaving, flow),
                (7, 0x1122_3344_5566_7788, false, None)
            );
        }
        other => panic!("{other:?}"),
    }

    // A flow report: flags bit 1, window, position.
    let report = FlowReport {
        position: 0x0102_0304_0506_0708,
        window: 0x000A_0000,
    };
    let n = emit_status(&mut buf, 7, 9, false, Some(report)).unwrap();
    assert_eq!(&buf[24..28], &[2, 0, 0, 0]);
    assert_eq!(&buf[28..32], &0x000A_0000u32.to_le_bytes());
    assert_eq!(&buf[32..40], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert!(matches!(
        Frame::parse(&buf[..n]).unwrap(),
        Frame::Status { leaving: false, flow: Some(r), .. } if r == report
    ));

    let n = emit_status(&mut buf, 3, 0, true, None).unwrap();
    assert_eq!(
        &buf[24..40],
        &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let frame = Frame::parse(&buf[..n]).unwrap();
    assert!(matches!(frame, Frame::Status { leaving: true, .. }));
    assert_eq!(frame.header().session, 0);
    assert_eq!(frame.header().stream, 3);

    // Unknown flag bits are ignored (forward compatible), and so are the window and
    // position without the flow flag.
    let mut fut = buf[..n].to_vec();
    fut[24] = 0xFC;
    fut[28..40].copy_from_slice(&[9; 12]);
    assert!(matches!(
        Frame::parse(&recrc(fut)).unwrap(),
        Frame::Status {
            leaving: false,
            flow: None,
            ..
        }
    ));

    // Strict length: one byte short or long is an error, whatever the CRC.
    let short = recrc(buf[..n - 1].to_vec());
    assert_eq!(Frame::parse(&short).unwrap_err(), DecodeError::Truncated);
    let header_only = recrc(buf[..HEADER_LEN].to_vec());
    assert_eq!(
        Frame::parse(&header_only).unwrap_err(),
        DecodeError::Truncated
    );
    let mut long = buf[..n].to_vec();
    long.push(0);
    assert_eq!(
        Frame::parse(&recrc(long)).unwrap_err(),
        DecodeError::TrailingBytes
    );
    assert_eq!(
        emit_status(&mut buf[..n - 1], 0, 0, false, None).unwrap_err(),
        EncodeError::BufferTooSmall
    );
}

/// Re-CRC a hand-mangled frame so the test reaches the check after the CRC.
fn recrc(mut f: Vec<u8>) -> Vec<u8> {
    finish_frame(&mut f);
    f
}

#[test]
fn malformed_inputs_are_typed_errors() {
    let good = data_frame(1, &[(FRAG_BEGIN | FRAG_END, b"abcd")]);
    assert_eq!(
        Frame::parse(&good[..10]).unwrap_err(),
        DecodeError::Truncated
    );
    let mut bad = good.clone();
    bad[40] ^= 1;
    assert_eq!(Frame::parse(&bad).unwrap_err(), DecodeError::BadCrc);
    let mut v = good.clone();
    v[4] = 9;
    assert_eq!(
        Frame::parse(&recrc(v)).unwrap_err(),
        DecodeError::UnknownVersion(9)
    );
    let mut t = good.clone();
    t[5] = 77;
    assert_eq!(
        Frame::parse(&recrc(t)).unwrap_err(),
        DecodeError::UnknownType(77)
    );
    let mut c = good.clone();
    c[32] = 0;
    assert_eq!(Frame::parse(&recrc(c)).unwrap_err(), DecodeError::BadCount);
    let mut c = good.clone();
    c[32] = 2;
    assert_eq!(Frame::parse(&recrc(c)).unwrap_err(), DecodeError::Overrun);
    let mut l = good.clone();
    l[36] = 200;
    assert_eq!(Frame::parse(&recrc(l)).unwrap_err(), DecodeError::Overrun);
    let mut tr = good.clone();
    tr.push(0);
    assert_eq!(
        Frame::parse(&recrc(tr)).unwrap_err(),
        DecodeError::TrailingBytes
    );
    let of = data_frame(u64::MAX, &[(3, b"a")]);
    assert_eq!(
        Frame::parse(&of).unwrap_err(),
        DecodeError::SequenceOverflow
    );

    let mut buf = [0u8; 128];
    let n = emit_ranges(&mut buf, FrameType::Nak, 1, 1, &[SeqRange::new(5, 6)]).unwrap();
    let mut rev = buf[..n].to_vec();
    rev[32..40].copy_from_slice(&9u64.to_le_bytes());
    assert_eq!(
        Frame::parse(&recrc(rev)).unwrap_err(),
        DecodeError::ReversedRange
    );
    let mut big = buf[..n].to_vec();
    big[40..48].copy_from_slice(&(5 + MAX_RANGE_SPAN + 1).to_le_bytes());
    assert_eq!(
        Frame::parse(&recrc(big)).unwrap_err(),
        DecodeError::OversizedRange
    );
    let mut cnt = buf[..n].to_vec();
    cnt[24] = (MAX_RANGES + 1) as u8;
    assert_eq!(
        Frame::parse(&recrc(cnt)).unwrap_err(),
        DecodeError::BadCount
    );

    let n = emit_control(&mut buf, FrameType::Heartbeat, 1, 1, 5, 5).unwrap();
    let mut hb = buf[..n].to_vec();
    hb[32..40].copy_from_slice(&6u64.to_le_bytes());
    assert_eq!(
        Frame::parse(&recrc(hb)).unwrap_err(),
        DecodeError::InconsistentWindow
    );
    assert_eq!(
        Frame::parse(&vec![0u8; MAX_FRAME_LEN + 1]).unwrap_err(),
        DecodeError::TooLong
    );
}

#[test]
fn encoder_rejects_bad_input() {
    let mut small = [0u8; 10];
    assert_eq!(
        DataFrameWriter::begin(&mut small, 0, 0, 0).unwrap_err(),
        EncodeError::BufferTooSmall
    );
    let mut buf = [0u8; 64];
    let mut w = DataFrameWriter::begin(&mut buf, 0, 0, 0).unwrap();
    assert_eq!(w.room(64), 64 - 36 - 4);
    assert_eq!(
        w.push(&mut buf, 3, &[0u8; 40]).unwrap_err(),
        EncodeError::BufferTooSmall
    );
    let mut big = vec![0u8; 70_000];
    assert_eq!(
        w.push(&mut big, 3, &[0u8; 65_536]).unwrap_err(),
        EncodeError::FragmentTooLong
    );
    assert_eq!(
        emit_ranges(&mut buf, FrameType::Nak, 0, 0, &[]).unwrap_err(),
        EncodeError::BadRanges
    );
    assert_eq!(
        emit_ranges(&mut buf, FrameType::Nak, 0, 0, &[SeqRange::new(3, 3)]).unwrap_err(),
        EncodeError::BadRanges
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Arbitrary bytes never panic the decoder; whatever decodes iterates cleanly.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(frame) = Frame::parse(&bytes) {
            match frame {
                Frame::Data(d) => { let _ = d.fragments().count(); }
                Frame::Nak(l) | Frame::Unavailable(l) => { let _ = l.iter().count(); }
                _ => {}
            }
        }
    }

    /// STATUS with any body length and content never panics; only exactly 16 bytes decode.
    #[test]
    fn status_garbage_never_panics(
        stream in any::<u32>(),
        session in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut f = vec![0u8; HEADER_LEN];
        Header { frame_type: FrameType::Status, flags: 0, stream, session, session_offset: 0 }.emit(&mut f);
        f.extend_from_slice(&body);
        finish_frame(&mut f);
        match Frame::parse(&f) {
            Ok(Frame::Status { header, leaving, flow }) => {
                prop_assert_eq!(body.len(), STATUS_BODY_LEN);
                prop_assert_eq!((header.stream, header.session), (stream, session));
                prop_assert_eq!(leaving, body[0] & 1 == 1);
                prop_assert_eq!(flow.is_some(), body[0] & 2 == 2);
                if let Some(r) = flow {
                    prop_assert_eq!(r.window, u32::from_le_bytes(body[4..8].try_into().unwrap()));
                    prop_assert_eq!(r.position, u64::from_le_bytes(body[8..16].try_into().unwrap()));
                }
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(e) => prop_assert!(body.len() != STATUS_BODY_LEN, "{:?}", e),
        }
    }

    /// Bytes with a valid CRC (so parsing reaches the body checks) never panic either.
    #[test]
    fn crc_valid_garbage_never_panics(
        ty in 0u8..8,
        count in any::<u16>(),
        mut body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut f = vec![0u8; HEADER_LEN];
        f[4] = PROTOCOL_VERSION;
        f[5] = ty;
        body.splice(0..0, count.to_le_bytes());
        f.extend_from_slice(&body);
        finish_frame(&mut f);
        if let Ok(Frame::Data(d)) = Frame::parse(&f) {
            prop_assert_eq!(d.fragments().count(), usize::from(d.count));
        }
    }

    /// Any fragment list encodes and decodes to itself.
    #[test]
    fn data_encode_decode(first in any::<u64>(), frags in proptest::collection::vec(
        (0u8..4, proptest::collection::vec(any::<u8>(), 0..64)), 1..20)) {
        prop_assume!(first.checked_add(frags.len() as u64).is_some());
        let refs: Vec<(u8, &[u8])> = frags.iter().map(|(f, p)| (*f, p.as_slice())).collect();
        let f = data_frame(first, &refs);
        let Frame::Data(d) = Frame::parse(&f).unwrap() else { panic!() };
        for (i, frag) in d.fragments().enumerate() {
            prop_assert_eq!(frag.seq, first + i as u64);
            prop_assert_eq!(frag.flags, frags[i].0);
            prop_assert_eq!(frag.payload, frags[i].1.as_slice());
        }
    }
}

/// Packing a frame that continues another: one valid frame with every fragment in order;
/// a frame that does not continue it, or would pass `max_len`, is refused untouched.
#[test]
fn append_data_fragments_packs_only_continuations_that_fit() {
    let a = data_frame(
        10,
        &[(FRAG_BEGIN | FRAG_END, b"alpha"), (FRAG_BEGIN, b"be")],
    );
    let b = data_frame(12, &[(FRAG_END, b"ta"), (FRAG_BEGIN | FRAG_END, b"gamma")]);
    let not_next = data_frame(13, &[(FRAG_BEGIN | FRAG_END, b"x")]);
    let mut buf = vec![0u8; 200];
    buf[..a.len()].copy_from_slice(&a);
    assert_eq!(
        append_data_fragments(&mut buf, a.len(), &not_next, 200),
        None
    );
    let body = b.len() - DataFrameWriter::EMPTY_LEN;
    assert_eq!(
        append_data_fragments(&mut buf, a.len(), &b, a.len() + body - 1),
        None
    );
    assert_eq!(buf[..a.len()], a[..], "refusals leave the frame alone");
    let len = append_data_fragments(&mut buf, a.len(), &b, 200).unwrap();
    assert_eq!(len, a.len() + body);
    set_retransmit(&mut buf[..len]);
    let Ok(Frame::Data(d)) = Frame::parse(&buf[..len]) else {
        panic!("not a valid DATA frame")
    };
    assert!(d.is_retransmit());
    let frags: Vec<(u64, u8, &[u8])> = d.fragments().map(|f| (f.seq, f.flags, f.payload)).collect();
    assert_eq!(
        frags,
        [
            (10, FRAG_BEGIN | FRAG_END, &b"alpha"[..]),
            (11, FRAG_BEGIN, b"be"),
            (12, FRAG_END, b"ta"),
            (13, FRAG_BEGIN | FRAG_END, b"gamma"),
        ]
    );
}

#[test]
fn group_size_classes_round_up_to_a_power_of_two() {
    for (receivers, class, size) in [
        (0, 0, None),
        (1, 1, Some(1)),
        (2, 2, Some(2)),
        (3, 3, Some(4)),
        (4, 3, Some(4)),
        (5, 4, Some(8)),
        (64, 7, Some(64)),
        (65, 8, Some(128)),
        (1 << 14, 15, Some(1 << 14)),
        (usize::MAX, 15, Some(1 << 14)),
    ] {
        let flags = group_flags(receivers);
        assert_eq!(
            (flags >> 12, flags & !FLAG_GROUP_MASK),
            (class, 0),
            "{receivers}"
        );
        // Other flag bits do not disturb the class.
        assert_eq!(
            group_size(flags | FLAG_RETRANSMIT | FLAG_AUTH),
            size,
            "{receivers}"
        );
    }
}
