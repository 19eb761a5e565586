//! A tiny, total binary codec for internal rows (entries, markers, account rows). Every
//! read is bounds-checked and returns `None` on short or malformed input, never panics.

pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn new() -> Self {
        Enc(Vec::with_capacity(64))
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// Length-prefixed (u32 LE) bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

pub(crate) struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    pub fn arr16(&mut self) -> Option<[u8; 16]> {
        self.take(16)?.try_into().ok()
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    /// A count of following items, bounded by the bytes left (each item takes at least
    /// `min_item` bytes) so a corrupt count cannot make us allocate without bound.
    pub fn count(&mut self, min_item: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min_item.max(1)) <= self.0.len()).then_some(n)
    }
    pub fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_total_on_truncation() {
        let mut e = Enc::new();
        e.u8(1).u16(2).u64(3).u128(4).bytes(b"hello");
        let buf = e.finish();
        let mut d = Dec(&buf);
        assert_eq!(d.u8(), Some(1));
        assert_eq!(d.u16(), Some(2));
        assert_eq!(d.u64(), Some(3));
        assert_eq!(d.u128(), Some(4));
        assert_eq!(d.bytes(), Some(&b"hello"[..]));
        assert_eq!(d.end(), Some(()));
        for cut in 0..buf.len() {
            let mut d = Dec(&buf[..cut]);
            let ok = (|| {
                d.u8()?;
                d.u16()?;
                d.u64()?;
                d.u128()?;
                d.bytes()?;
                Some(())
            })();
            assert!(ok.is_none(), "truncated at {cut} must fail");
        }
    }

    #[test]
    fn huge_count_is_refused() {
        let buf = u32::MAX.to_le_bytes();
        assert_eq!(Dec(&buf).count(1), None);
    }
}
