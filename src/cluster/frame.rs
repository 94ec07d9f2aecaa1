//! The framing of what the cluster keeps in JetStream (journal records,
//! partition snapshots): a format version byte, the CRC-32 of the payload
//! (little endian), then the payload. JetStream's own checks are not
//! trusted to catch a flipped bit; this one is.

const HEADER_LEN: usize = 5;

/// Why a framed message cannot be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header.
    Short(usize),
    /// Another format version than the reader's.
    Version(u8),
    Checksum {
        stored: u32,
        actual: u32,
    },
}

/// `payload` framed with `version` and its checksum.
pub fn seal(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(version);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of `bytes`, once its version is `version` and its checksum holds.
pub fn open(version: u8, bytes: &[u8]) -> Result<&[u8], FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Short(bytes.len()));
    }
    if bytes[0] != version {
        return Err(FrameError::Version(bytes[0]));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[1..HEADER_LEN]);
    let stored = u32::from_le_bytes(crc);
    let payload = &bytes[HEADER_LEN..];
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(FrameError::Checksum { stored, actual });
    }
    Ok(payload)
}
