//! The 4-byte header that starts every frame, legacy and v2: `len: u16` then `cmd: u16`,
//! little-endian, `len` counting the whole frame.

/// Size of the `len` + `cmd` header that starts every frame.
pub const HEADER_LEN: usize = 4;

/// The largest frame the 16-bit `len` field can describe.
pub const MAX_FRAME_LEN: u16 = u16::MAX;

/// The frame header: total length and command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u16,
    pub cmd: u16,
}

impl Header {
    /// Reads a header from the first four bytes, if present.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            len: u16::from_le_bytes([bytes[0], bytes[1]]),
            cmd: u16::from_le_bytes([bytes[2], bytes[3]]),
        })
    }

    /// Encodes the header as four little-endian bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [l0, l1] = self.len.to_le_bytes();
        let [c0, c1] = self.cmd.to_le_bytes();
        [l0, l1, c0, c1]
    }
}
