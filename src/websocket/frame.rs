//! A pure, incremental, header-only WebSocket frame parser (RFC 6455 §5).
//!
//! It never copies or unmasks data payloads: it reads frame headers, counts
//! payload bytes past them, and checks the rules a relay must enforce. Input
//! may be split anywhere; the same stream yields the same events however it
//! is cut. Control frame payloads (at most 125 bytes) are captured, unmasked,
//! so the relay can read close codes and recognise its own pongs.

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes of the header itself (2 to 14).
    pub header_len: usize,
}

/// A rule of RFC 6455 the peer broke, or the gateway's message size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("reserved bits {0:#b} set without a negotiated extension")]
    ReservedBits(u8),
    #[error("frame masking does not match the sender's role")]
    Masking,
    #[error("control frame longer than 125 bytes")]
    ControlTooLong,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data message before the previous one finished")]
    UnfinishedMessage,
    #[error("payload length with the most significant bit set")]
    LengthOverflow,
    #[error("close frame with a one-byte payload")]
    BadClosePayload,
    #[error("close code {0} may not be sent (RFC 6455 §7.4)")]
    BadCloseCode(u16),
    #[error("close reason that is not UTF-8")]
    CloseReasonNotUtf8,
    #[error("message larger than the route's max_message_size")]
    MessageTooBig,
}

impl Violation {
    /// The close code the offender gets (RFC 6455 §7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            Violation::MessageTooBig => 1009,
            // §8.1: bytes that must be UTF-8 and are not.
            Violation::CloseReasonNotUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// What the frames from one peer must look like.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Clients mask every frame; servers never do (RFC 6455 §5.1).
    pub masked: bool,
    /// RSV bits an extension negotiated on the session may set on data frames.
    pub allowed_rsv: u8,
    /// Largest message, summed over its frames' payload lengths.
    pub max_message_size: u64,
}

/// Something the parser found, at the position just after the bytes it consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, valid frame header.
    Header(FrameHeader),
    /// The current frame's last payload byte was consumed: a frame boundary.
    /// Control frames come with their whole payload, unmasked.
    FrameEnd {
        header: FrameHeader,
        control: Option<Box<ControlFrame>>,
    },
    /// The current frame breaks a rule; the parser stops here for good.
    Violation(Violation),
}

/// A control frame's payload, unmasked.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlFrame {
    pub opcode: OpCode,
    len: u8,
    payload: [u8; 125],
}

impl ControlFrame {
    pub fn payload(&self) -> &[u8] {
        &self.payload[..usize::from(self.len)]
    }

    /// The status code of a close frame, if it carries one (RFC 6455 §5.5.1).
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload()) {
            (OpCode::Close, [high, low, ..]) => Some(u16::from_be_bytes([*high, *low])),
            _ => None,
        }
    }
}

impl std::fmt::Debug for ControlFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlFrame")
            .field("opcode", &self.opcode)
            .field("payload", &self.payload())
            .finish()
    }
}

/// Incremental parser state for one direction of a session.
#[derive(Debug)]
pub struct FrameParser {
    rules: Rules,
    header: [u8; 14],
    header_len: usize,
    current: Option<FrameHeader>,
    payload_left: u64,
    /// Bytes of the data message in progress, summed over its frames.
    message_len: u64,
    in_message: bool,
    /// Boxed: a session holds two parsers for its whole life, and control
    /// frames (a ping every half minute) are too rare to keep 127 bytes each.
    control: Option<Box<ControlFrame>>,
    broken: bool,
}

impl FrameParser {
    pub fn new(rules: Rules) -> FrameParser {
        FrameParser {
            rules,
            header: [0; 14],
            header_len: 0,
            current: None,
            payload_left: 0,
            message_len: 0,
            in_message: false,
            control: None,
            broken: false,
        }
    }

    /// Whether the bytes consumed so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.current.is_none() && self.header_len == 0
    }

    /// Whether a frame header has begun but is not complete.
    pub fn in_header(&self) -> bool {
        self.current.is_none() && self.header_len > 0
    }

    /// Whether a frame's payload is being read.
    pub fn in_payload(&self) -> bool {
        self.current.is_some()
    }

    /// Payload bytes of the current data frame still to come; 0 outside
    /// one. Control frames count as none: their payloads must be seen.
    pub fn data_payload_left(&self) -> u64 {
        match self.current {
            Some(header) if !header.opcode.is_control() => self.payload_left,
            _ => 0,
        }
    }

    /// Counts `len` payload bytes of the current data frame as consumed
    /// without seeing them (they were forwarded by the kernel). At most
    /// [`Self::data_payload_left`]; the frame's end is reported by the next
    /// [`Self::advance`], which then consumes nothing.
    pub fn skip_data_payload(&mut self, len: u64) {
        debug_assert!(len <= self.data_payload_left());
        self.payload_left -= len.min(self.data_payload_left());
    }

    /// Header bytes consumed but not yet forming a complete header.
    pub fn partial_header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }

    /// Consumes bytes from `input` up to and including the next event.
    /// Returns how many bytes were consumed and the event, if one occurred.
    /// Call it until it returns `(0, None)`: a frame with an empty payload
    /// ends without consuming anything after its header.
    pub fn advance(&mut self, input: &[u8]) -> (usize, Option<Event>) {
        if self.broken {
            return (0, None);
        }
        match self.current {
            None => self.advance_header(input),
            Some(header) => self.advance_payload(input, header),
        }
    }

    fn advance_header(&mut self, input: &[u8]) -> (usize, Option<Event>) {
        let mut used = 0;
        while used < input.len() {
            let needed = self.header_needed();
            if self.header_len == needed {
                break;
            }
            let take = (needed - self.header_len).min(input.len() - used);
            self.header[self.header_len..self.header_len + take]
                .copy_from_slice(&input[used..used + take]);
            self.header_len += take;
            used += take;
        }
        if self.header_len < 2 || self.header_len < self.header_needed() {
            return (used, None);
        }
        let event = match self.decode_header() {
            Ok(header) => self.start_frame(header),
            Err(violation) => {
                self.broken = true;
                Event::Violation(violation)
            }
        };
        (used, Some(event))
    }

    /// How many header bytes the header being read needs, as far as known.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let mask_len = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let length_len = match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + length_len + mask_len
    }

    fn decode_header(&self) -> Result<FrameHeader, Violation> {
        let (first, second) = (self.header[0], self.header[1]);
        let opcode =
            OpCode::from_bits(first & 0x0F).ok_or(Violation::ReservedOpcode(first & 0x0F))?;
        let fin = first & 0x80 != 0;
        let rsv = (first >> 4) & 0x07;
        let allowed_rsv = if opcode.is_control() {
            0
        } else {
            self.rules.allowed_rsv
        };
        if rsv & !allowed_rsv != 0 {
            return Err(Violation::ReservedBits(rsv));
        }
        let masked = second & 0x80 != 0;
        if masked != self.rules.masked {
            return Err(Violation::Masking);
        }
        let (payload_len, mask_at) = match second & 0x7F {
            126 => (
                u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                4,
            ),
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            short => (u64::from(short), 2),
        };
        if payload_len >> 63 != 0 {
            return Err(Violation::LengthOverflow);
        }
        let mask = masked.then(|| {
            let mut key = [0; 4];
            key.copy_from_slice(&self.header[mask_at..mask_at + 4]);
            key
        });
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
            header_len: self.header_len,
        };
        self.check_sequence(&header)?;
        Ok(header)
    }

    /// Control frame limits, fragmentation order and the message size limit.
    fn check_sequence(&self, header: &FrameHeader) -> Result<(), Violation> {
        match header.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if header.payload_len > 125 {
                    return Err(Violation::ControlTooLong);
                }
                if !header.fin {
                    return Err(Violation::FragmentedControl);
                }
                if header.opcode == OpCode::Close && header.payload_len == 1 {
                    return Err(Violation::BadClosePayload);
                }
                Ok(())
            }
            OpCode::Continuation if !self.in_message => Err(Violation::UnexpectedContinuation),
            OpCode::Text | OpCode::Binary if self.in_message => Err(Violation::UnfinishedMessage),
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                let so_far = if header.opcode == OpCode::Continuation {
                    self.message_len
                } else {
                    0
                };
                match so_far.checked_add(header.payload_len) {
                    Some(total) if total <= self.rules.max_message_size => Ok(()),
                    _ => Err(Violation::MessageTooBig),
                }
            }
        }
    }

    fn start_frame(&mut self, header: FrameHeader) -> Event {
        self.header_len = 0;
        self.payload_left = header.payload_len;
        self.current = Some(header);
        if header.opcode.is_control() {
            self.control = Some(Box::new(ControlFrame {
                opcode: header.opcode,
                len: 0,
                payload: [0; 125],
            }));
        } else {
            if header.opcode != OpCode::Continuation {
                self.message_len = 0;
            }
            self.message_len += header.payload_len;
            self.in_message = !header.fin;
        }
        Event::Header(header)
    }

    fn advance_payload(&mut self, input: &[u8], header: FrameHeader) -> (usize, Option<Event>) {
        let take =
            usize::try_from(self.payload_left).map_or(input.len(), |left| left.min(input.len()));
        if let Some(control) = &mut self.control {
            let start = usize::from(control.len);
            for (i, byte) in input[..take].iter().enumerate() {
                let key = header.mask.map_or(0, |mask| mask[(start + i) % 4]);
                control.payload[start + i] = byte ^ key;
            }
            // Control payloads are at most 125 bytes, checked with the header.
            control.len += take as u8;
        }
        self.payload_left -= take as u64;
        if self.payload_left > 0 {
            return (take, None);
        }
        self.current = None;
        let control = self.control.take();
        if let Some(close) = control.as_ref().filter(|c| c.opcode == OpCode::Close) {
            if let Err(violation) = check_close(close.payload()) {
                self.broken = true;
                return (take, Some(Event::Violation(violation)));
            }
        }
        (take, Some(Event::FrameEnd { header, control }))
    }
}

/// A close payload a peer may send (RFC 6455 §5.5.1, §7.4): none, or a
/// code one may put on the wire followed by a UTF-8 reason. 1005, 1006 and
/// 1015 only report what happened locally; 1016–2999 are unassigned.
fn check_close(payload: &[u8]) -> Result<(), Violation> {
    let [high, low, reason @ ..] = payload else {
        return Ok(());
    };
    let code = u16::from_be_bytes([*high, *low]);
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !sendable {
        return Err(Violation::BadCloseCode(code));
    }
    std::str::from_utf8(reason).map_err(|_| Violation::CloseReasonNotUtf8)?;
    Ok(())
}

/// Every event of a stream fed to a new parser in `chunks`, each with the
/// stream offset just after it. Any split of the same stream must give the
/// same list: the property the unit tests and the fuzz target check.
pub fn stream_events(rules: Rules, chunks: &[&[u8]]) -> Vec<(usize, Event)> {
    let mut parser = FrameParser::new(rules);
    let mut seen = Vec::new();
    let mut base = 0;
    for chunk in chunks {
        let mut offset = 0;
        loop {
            let (used, event) = parser.advance(&chunk[offset..]);
            offset += used;
            match event {
                Some(event) => seen.push((base + offset, event)),
                None if used == 0 => break,
                None => {}
            }
        }
        base += chunk.len();
    }
    seen
}

/// Encodes one unfragmented frame: what the gateway itself sends (pings,
/// closes). `mask` is required toward servers and forbidden toward clients.
pub fn encode(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let bits = match opcode {
        OpCode::Continuation => 0x0,
        OpCode::Text => 0x1,
        OpCode::Binary => 0x2,
        OpCode::Close => 0x8,
        OpCode::Ping => 0x9,
        OpCode::Pong => 0xA,
    };
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | bits);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(i, byte)| byte ^ key[i % 4]),
            );
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// A close frame with a status code and a short reason.
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    encode(OpCode::Close, &payload, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FROM_CLIENT: Rules = Rules {
        masked: true,
        allowed_rsv: 0,
        max_message_size: 1 << 20,
    };
    const FROM_SERVER: Rules = Rules {
        masked: false,
        allowed_rsv: 0,
        max_message_size: 1 << 20,
    };
    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn fragment(fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = encode(opcode, payload, mask);
        if !fin {
            frame[0] &= 0x7F;
        }
        frame
    }

    fn violation(rules: Rules, bytes: &[u8]) -> Option<Violation> {
        stream_events(rules, &[bytes])
            .into_iter()
            .find_map(|(_, e)| match e {
                Event::Violation(v) => Some(v),
                _ => None,
            })
    }

    #[test]
    fn frames_of_every_length_form() {
        for len in [0usize, 1, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let bytes = encode(OpCode::Binary, &payload, KEY);
            let seen = stream_events(FROM_CLIENT, &[&bytes]);
            assert_eq!(seen.len(), 2, "len {len}: {seen:?}");
            let Event::Header(header) = &seen[0].1 else {
                panic!("header first")
            };
            assert_eq!((header.payload_len, header.mask), (len as u64, KEY));
            assert_eq!(seen[1].0, bytes.len(), "boundary after the payload");
        }
    }

    #[test]
    fn skipped_data_payload_ends_the_frame_as_if_it_had_been_read() {
        let mut bytes = fragment(false, OpCode::Binary, &[9; 1000], KEY);
        bytes.extend(encode(OpCode::Ping, b"hi", KEY));
        bytes.extend(encode(OpCode::Continuation, &[8; 70000], KEY));
        let read = stream_events(FROM_CLIENT, &[&bytes]);

        let mut parser = FrameParser::new(FROM_CLIENT);
        let mut seen = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() || !parser.at_boundary() {
            if parser.data_payload_left() > 1 {
                // The relay skips what the kernel forwarded, in pieces.
                let piece = parser.data_payload_left() / 2;
                parser.skip_data_payload(piece);
                offset += piece as usize;
                continue;
            }
            let (used, event) = parser.advance(&bytes[offset..]);
            offset += used;
            match event {
                Some(event) => seen.push((offset, event)),
                None if used == 0 => break,
                None => {}
            }
        }
        assert_eq!(seen, read);
        assert_eq!(parser.data_payload_left(), 0);
    }

    #[test]
    fn control_payloads_are_never_skipped() {
        let mut parser = FrameParser::new(FROM_CLIENT);
        let ping = encode(OpCode::Ping, &[5; 100], KEY);
        let (_, event) = parser.advance(&ping[..6]);
        assert!(matches!(event, Some(Event::Header(_))));
        assert!(parser.in_payload());
        assert_eq!(
            parser.data_payload_left(),
            0,
            "a control payload must be read"
        );
    }

    #[test]
    fn close_codes_and_reasons_are_checked() {
        for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let close = encode_close(code, "", KEY);
            assert_eq!(
                violation(FROM_CLIENT, &close),
                Some(Violation::BadCloseCode(code)),
                "{code}"
            );
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999,
        ] {
            assert_eq!(
                violation(FROM_CLIENT, &encode_close(code, "ok", KEY)),
                None,
                "{code}"
            );
        }
        let bad_reason = encode(OpCode::Close, &[0x03, 0xe8, 0xff, 0xfe], KEY);
        assert_eq!(
            violation(FROM_CLIENT, &bad_reason),
            Some(Violation::CloseReasonNotUtf8)
        );
        assert_eq!(Violation::CloseReasonNotUtf8.close_code(), 1007);
        assert_eq!(
            violation(FROM_CLIENT, &encode(OpCode::Close, b"", KEY)),
            None
        );
    }

    #[test]
    fn control_payloads_are_unmasked_and_close_codes_read() {
        let close = encode_close(4000, "bye", KEY);
        let seen = stream_events(FROM_CLIENT, &[&close]);
        let Event::FrameEnd {
            control: Some(control),
            ..
        } = &seen[1].1
        else {
            panic!("{seen:?}")
        };
        assert_eq!(control.close_code(), Some(4000));
        assert_eq!(&control.payload()[2..], b"bye");
    }

    #[test]
    fn rule_violations() {
        assert_eq!(
            violation(FROM_CLIENT, &encode(OpCode::Text, b"x", None)),
            Some(Violation::Masking)
        );
        assert_eq!(
            violation(FROM_SERVER, &encode(OpCode::Text, b"x", KEY)),
            Some(Violation::Masking)
        );
        assert_eq!(
            violation(FROM_SERVER, &[0x83, 0]),
            Some(Violation::ReservedOpcode(3))
        );
        assert_eq!(
            violation(FROM_SERVER, &[0xC1, 0]),
            Some(Violation::ReservedBits(4))
        );
        assert_eq!(
            violation(FROM_SERVER, &encode(OpCode::Ping, &[0; 126], None)),
            Some(Violation::ControlTooLong)
        );
        assert_eq!(
            violation(FROM_SERVER, &fragment(false, OpCode::Ping, b"", None)),
            Some(Violation::FragmentedControl)
        );
        assert_eq!(
            violation(FROM_SERVER, &encode(OpCode::Continuation, b"x", None)),
            Some(Violation::UnexpectedContinuation)
        );
        let mut two_starts = fragment(false, OpCode::Text, b"a", None);
        two_starts.extend(encode(OpCode::Text, b"b", None));
        assert_eq!(
            violation(FROM_SERVER, &two_starts),
            Some(Violation::UnfinishedMessage)
        );
        assert_eq!(
            violation(FROM_SERVER, &encode(OpCode::Close, b"x", None)),
            Some(Violation::BadClosePayload)
        );
        let huge = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            violation(FROM_SERVER, &huge),
            Some(Violation::LengthOverflow)
        );
    }

    #[test]
    fn extensions_allow_rsv1_on_data_frames_only() {
        let rules = Rules {
            allowed_rsv: 0b100,
            ..FROM_SERVER
        };
        assert_eq!(violation(rules, &[0xC1, 0]), None);
        assert_eq!(
            violation(rules, &[0xC9, 0]),
            Some(Violation::ReservedBits(4))
        );
    }

    #[test]
    fn message_size_is_summed_over_fragments_and_checked_at_the_header() {
        let rules = Rules {
            max_message_size: 10,
            ..FROM_SERVER
        };
        let mut stream = fragment(false, OpCode::Text, b"123456", None);
        stream.extend(encode(OpCode::Ping, b"", None));
        stream.extend(fragment(true, OpCode::Continuation, b"1234", None));
        assert_eq!(violation(rules, &stream), None, "exactly 10 bytes");
        let mut over = fragment(false, OpCode::Text, b"123456", None);
        let header_only = &fragment(true, OpCode::Continuation, b"12345", None)[..2];
        over.extend_from_slice(header_only);
        assert_eq!(violation(rules, &over), Some(Violation::MessageTooBig));
    }

    fn any_frame() -> impl Strategy<Value = Vec<u8>> {
        let data = (prop::collection::vec(any::<u8>(), 0..300), any::<bool>()).prop_map(
            |(payload, text)| {
                encode(
                    if text { OpCode::Text } else { OpCode::Binary },
                    &payload,
                    KEY,
                )
            },
        );
        let control = prop::collection::vec(any::<u8>(), 0..=125)
            .prop_map(|payload| encode(OpCode::Ping, &payload, KEY));
        let big = (126usize..70_000).prop_map(|len| encode(OpCode::Binary, &vec![0; len], KEY));
        prop_oneof![4 => data, 2 => control, 1 => big]
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_events(
            frames in prop::collection::vec(any_frame(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream: Vec<u8> = frames.concat();
            let whole = stream_events(FROM_CLIENT, &[&stream]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for point in points.into_iter().chain([stream.len()]) {
                chunks.push(&stream[last..point]);
                last = point;
            }
            prop_assert_eq!(stream_events(FROM_CLIENT, &chunks), whole.clone());
            let ends = whole.iter().filter(|(_, e)| matches!(e, Event::FrameEnd { .. })).count();
            prop_assert_eq!(ends, frames.len());
            prop_assert_eq!(whole.last().map(|(at, _)| *at), Some(stream.len()));
        }
    }
}
