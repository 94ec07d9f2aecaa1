//! Record envelope: `[format version u8][crc32 u32 LE of payload][payload]`.
//!
//! Every value the orchestrator stores goes through this envelope so that a torn or
//! bit-flipped record, or one written by a newer format, is *detected and reported*
//! as [`Error::Corrupt`] instead of being deserialized into plausible-looking state.
//! RocksDB has block checksums of its own, but they do not cover the memory twin, a
//! record copied between stores (replication, later), or a bug that writes the wrong
//! bytes; this checksum travels with the value itself.
//!
//! The payload is `postcard` (compact, serde-based, no schema); evolving a stored type
//! therefore means bumping [`FORMAT_VERSION`] and decoding both versions.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::printable;
use super::Error;

/// The only envelope version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload: version (1) + crc32 (4).
pub const HEADER_LEN: usize = 5;

/// Serialize `value` with postcard and wrap it in the envelope.
///
/// Fails only if the value's `Serialize` impl is something postcard cannot encode
/// (for example a sequence of unknown length), which is reported as [`Error::Encode`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0; 4]);
    let mut out = postcard::to_extend(value, out).map_err(|e| Error::Encode(e.to_string()))?;
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Check the envelope of the record stored under `key` and deserialize its payload.
///
/// `key` is only used to make the error actionable: every failure is an
/// [`Error::Corrupt`] naming the key (printable) and the reason. Trailing bytes after
/// the postcard value are also treated as corruption, since an exact-length payload is
/// what [`encode`] writes.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    let payload = verify(key, bytes)?;
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(corrupt(
            key,
            format!("{} trailing bytes after the payload", rest.len()),
        )),
        Err(e) => Err(corrupt(key, format!("undecodable payload: {e}"))),
    }
}

/// [`decode`] for a type that gained trailing fields: a payload that does not
/// decode as `T` is decoded as the encodings older builds wrote (`Old`, a
/// tuple of types newest first) and converted. The error of the `T` attempt
/// is reported if all fail.
pub fn decode_compat<T: DeserializeOwned, Old: OlderEncodings<T>>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, Error> {
    match decode::<T>(key, bytes) {
        Ok(v) => Ok(v),
        Err(e) => Old::decode_older(key, bytes).ok_or(e),
    }
}

/// The encodings of `T` older builds wrote, as a tuple of types that
/// convert into `T`, newest first: `(V1,)`, `(V2, V1)`, `(V3, V2, V1)` and so on.
pub trait OlderEncodings<T> {
    /// The first of the older encodings `bytes` decodes as, converted.
    fn decode_older(key: &[u8], bytes: &[u8]) -> Option<T>;
}

impl<T, A: DeserializeOwned + Into<T>> OlderEncodings<T> for (A,) {
    fn decode_older(key: &[u8], bytes: &[u8]) -> Option<T> {
        decode::<A>(key, bytes).ok().map(Into::into)
    }
}

impl<T, A: DeserializeOwned + Into<T>, B: DeserializeOwned + Into<T>> OlderEncodings<T> for (A, B) {
    fn decode_older(key: &[u8], bytes: &[u8]) -> Option<T> {
        <(A,)>::decode_older(key, bytes).or_else(|| <(B,)>::decode_older(key, bytes))
    }
}

impl<T, A, B, C> OlderEncodings<T> for (A, B, C)
where
    A: DeserializeOwned + Into<T>,
    B: DeserializeOwned + Into<T>,
    C: DeserializeOwned + Into<T>,
{
    fn decode_older(key: &[u8], bytes: &[u8]) -> Option<T> {
        <(A, B)>::decode_older(key, bytes).or_else(|| <(C,)>::decode_older(key, bytes))
    }
}

impl<T, A, B, C, D> OlderEncodings<T> for (A, B, C, D)
where
    A: DeserializeOwned + Into<T>,
    B: DeserializeOwned + Into<T>,
    C: DeserializeOwned + Into<T>,
    D: DeserializeOwned + Into<T>,
{
    fn decode_older(key: &[u8], bytes: &[u8]) -> Option<T> {
        <(A, B, C)>::decode_older(key, bytes).or_else(|| <(D,)>::decode_older(key, bytes))
    }
}

impl<T, A, B, C, D, E> OlderEncodings<T> for (A, B, C, D, E)
where
    A: DeserializeOwned + Into<T>,
    B: DeserializeOwned + Into<T>,
    C: DeserializeOwned + Into<T>,
    D: DeserializeOwned + Into<T>,
    E: DeserializeOwned + Into<T>,
{
    fn decode_older(key: &[u8], bytes: &[u8]) -> Option<T> {
        <(A, B, C, D)>::decode_older(key, bytes).or_else(|| <(E,)>::decode_older(key, bytes))
    }
}

/// Check version and checksum and return the payload without deserializing it.
///
/// Useful to verify records whose type the caller does not know.
pub fn verify<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], Error> {
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(
            key,
            format!(
                "record of {} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    let version = bytes[0];
    if version != FORMAT_VERSION {
        return Err(corrupt(
            key,
            format!("unknown format version {version} (this build reads {FORMAT_VERSION})"),
        ));
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[1..HEADER_LEN]);
    let stored = u32::from_le_bytes(crc_bytes);
    let payload = &bytes[HEADER_LEN..];
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(corrupt(
            key,
            format!("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"),
        ));
    }
    Ok(payload)
}

fn corrupt(key: &[u8], reason: String) -> Error {
    Error::Corrupt {
        key: printable(key),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        n: u64,
        items: Vec<u32>,
    }

    fn sample() -> Rec {
        Rec {
            name: "step-α".into(),
            n: 42,
            items: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Rec>(b"k", &bytes).unwrap(), sample());
    }

    fn reason(e: Error) -> String {
        match e {
            Error::Corrupt { reason, .. } => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn short_record_is_corrupt() {
        for len in 0..HEADER_LEN {
            let r = reason(decode::<Rec>(b"k", &vec![FORMAT_VERSION; len]).unwrap_err());
            assert!(r.contains("shorter"), "{r}");
        }
    }

    #[test]
    fn unknown_version_is_corrupt() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = 9;
        assert!(reason(decode::<Rec>(b"k", &bytes).unwrap_err()).contains("version 9"));
    }

    #[test]
    fn any_flipped_payload_or_crc_bit_is_detected() {
        let bytes = encode(&sample()).unwrap();
        for i in 1..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let err = decode::<Rec>(b"J\x00\x01", &bad).unwrap_err();
                match err {
                    Error::Corrupt { key, .. } => assert_eq!(key, "J\\x00\\x01"),
                    other => panic!("byte {i} bit {bit}: expected Corrupt, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn valid_crc_but_wrong_type_is_corrupt() {
        let bytes = encode(&7u8).unwrap();
        assert!(reason(decode::<Rec>(b"k", &bytes).unwrap_err()).contains("undecodable"));
        let bytes = encode(&(1u8, 2u8)).unwrap();
        assert!(reason(decode::<u8>(b"k", &bytes).unwrap_err()).contains("trailing"));
    }
}
