//! The byte encoding every key shares: names with a one-byte length
//! prefix, the end of a prefix range, and a cursor that decodes a key and
//! names it in every error.

use super::{printable, MAX_NAME_LEN};
use crate::storage::Error;

/// Append `name` with its one-byte length prefix; empty and oversized names are
/// refused as values (they come from callers, so they are expected failures).
pub(super) fn push_name(k: &mut Vec<u8>, name: &str, what: &str) -> Result<(), Error> {
    let len = u8::try_from(name.len())
        .ok()
        .filter(|&l| l > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{what} must be 1..={MAX_NAME_LEN} bytes, got {} bytes",
                name.len()
            ))
        })?;
    k.push(len);
    k.extend_from_slice(name.as_bytes());
    Ok(())
}

/// The smallest key greater than every key that starts with `prefix`.
///
/// Every prefix built here starts with a table tag, and no tag is `0xFF`, so a byte
/// to increment always exists.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Unreachable for tagged prefixes; an all-0xFF prefix has no finite successor,
    // so the best bound is "past every tag this layout uses".
    vec![u8::MAX]
}

/// A cursor over a key being decoded; every failure is a `Corrupt` naming the key.
pub(super) struct Reader<'a> {
    key: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(key: &'a [u8], tag: u8) -> Result<Self, Error> {
        let mut r = Reader { key, rest: key };
        let found = r.u8()?;
        if found != tag {
            return Err(r.corrupt(format!(
                "expected table tag {:?}, found {:?}",
                char::from(tag),
                char::from(found)
            )));
        }
        Ok(r)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(self.corrupt(format!(
                "key truncated: needed {n} more bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn name(&mut self) -> Result<String, Error> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.corrupt(format!("name is not UTF-8: {e}"))),
        }
    }

    pub(super) fn end(&self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt(format!("{} unexpected trailing bytes", self.rest.len())))
        }
    }

    pub(super) fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            key: printable(self.key),
            reason,
        }
    }
}
