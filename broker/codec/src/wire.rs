//! Wire primitives: a zero-copy reader over one received packet and the matching writers.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::types::MqttString;

/// Largest value a Variable Byte Integer can hold (4 bytes).
pub const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// Reads fields from the body of one packet; every read is bounded by the body.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(self.buf.get_u32())
    }

    pub(crate) fn vbi(&mut self) -> Result<u32, DecodeError> {
        match read_vbi(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// The next `n` bytes, shared with the packet buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: two-byte length then the bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String, checked for validity and U+0000 [MQTT-1.5.4-1], [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let raw = self.binary()?;
        if raw.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        MqttString::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A sub-reader over the next `n` bytes.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        self.take(n).map(Reader::new)
    }
}

/// Decodes a Variable Byte Integer from the front of `buf`: `Ok(None)` if more bytes are
/// needed, otherwise the value and the number of bytes it used.
pub(crate) fn read_vbi(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::VariableByteIntegerTooLong)
}

/// Number of bytes the Variable Byte Integer encoding of `v` uses.
pub(crate) const fn vbi_len(v: usize) -> usize {
    if v < 128 {
        1
    } else if v < 16_384 {
        2
    } else if v < 2_097_152 {
        3
    } else {
        4
    }
}

/// Writes `v` (at most [`MAX_VARIABLE_BYTE_INTEGER`]; checked by callers) as a Variable Byte
/// Integer.
pub(crate) fn write_vbi(mut v: usize, out: &mut BytesMut) {
    loop {
        // The mask keeps the value below 128, so the cast cannot truncate.
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Length of a UTF-8 string field (two-byte length prefix included).
pub(crate) fn string_len(s: &MqttString) -> usize {
    2 + s.len()
}

/// Length of a Binary Data field (two-byte length prefix included).
pub(crate) fn binary_len(b: &[u8]) -> usize {
    2 + b.len()
}

/// Writes a UTF-8 string field, rejecting U+0000 and strings over 65,535 bytes.
pub(crate) fn write_string(s: &MqttString, out: &mut BytesMut) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::StringTooLong(s.len()))?;
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NullCharacter);
    }
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

/// Writes a Binary Data field, rejecting data over 65,535 bytes.
pub(crate) fn write_binary(b: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::BinaryTooLong(b.len()))?;
    out.put_u16(len);
    out.put_slice(b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vbi_round_trip_at_boundaries() {
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = BytesMut::new();
            write_vbi(v, &mut out);
            assert_eq!(out.len(), vbi_len(v));
            let (got, used) = read_vbi(&out).unwrap().unwrap();
            assert_eq!((got as usize, used), (v, out.len()));
        }
    }

    #[test]
    fn vbi_longer_than_four_bytes_is_an_error() {
        assert_eq!(
            read_vbi(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::VariableByteIntegerTooLong)
        );
        assert_eq!(read_vbi(&[0xFF, 0xFF]), Ok(None));
    }
}
