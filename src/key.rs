//! Record keys: the [`Key`] trait turns strings, integers, byte arrays and tuples into the
//! bytes a record is stored under, in an order-preserving way.

use std::borrow::Cow;

/// What a record key can be. A key is stored as bytes after the account id, so records of
/// one account sort by key bytes; these encodings keep the natural order of each type:
///
/// | type | bytes |
/// |---|---|
/// | `[u8]`, `[u8; N]`, `Vec<u8>`, `str`, `String` | the bytes themselves |
/// | `u8`..`u128` | big-endian (numeric order) |
/// | `i8`..`i128` | big-endian with the sign bit flipped (numeric order) |
/// | tuples `(A, B)`, `(A, B, C)`, `(A, B, C, D)` | the components in order; a byte or string component that is not the last is escaped (`00` -> `00 FF`) and ends with `00 00`, so `("a", "b")` sorts before `("ab", "")` and no tuple is a prefix of another by accident |
///
/// ```
/// use regionkv::Key;
/// assert_eq!(&*"l1".key_bytes(), b"l1");
/// assert_eq!(&*7u64.key_bytes(), &[0, 0, 0, 0, 0, 0, 0, 7]);
/// assert!((-1i32).key_bytes() < 1i32.key_bytes());
/// assert!((1u32, "b").key_bytes() < (2u32, "a").key_bytes());
/// ```
///
/// Implement it for your own key types (e.g. an id newtype) by giving its bytes.
pub trait Key {
    /// The key's bytes as a whole key.
    fn key_bytes(&self) -> Cow<'_, [u8]>;

    /// Appends the key as one component of a tuple key; `last`: it is the final one. The
    /// default escapes a non-final component (byte strings of any length); fixed-width
    /// types append their bytes as they are.
    fn encode_component(&self, out: &mut Vec<u8>, last: bool) {
        let b = self.key_bytes();
        if last {
            out.extend_from_slice(&b);
            return;
        }
        for &x in b.iter() {
            out.push(x);
            if x == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0, 0]);
    }
}

impl<K: Key + ?Sized> Key for &K {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        (**self).key_bytes()
    }
    fn encode_component(&self, out: &mut Vec<u8>, last: bool) {
        (**self).encode_component(out, last)
    }
}

impl Key for [u8] {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<const N: usize> Key for [u8; N] {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
    fn encode_component(&self, out: &mut Vec<u8>, _last: bool) {
        out.extend_from_slice(self); // fixed width
    }
}

impl Key for Vec<u8> {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl Key for Box<[u8]> {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl Key for str {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl Key for String {
    #[inline]
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Key for $t {
            #[inline]
            fn key_bytes(&self) -> Cow<'_, [u8]> {
                Cow::Owned(self.to_be_bytes().to_vec())
            }
            fn encode_component(&self, out: &mut Vec<u8>, _last: bool) {
                out.extend_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, u128);

macro_rules! signed {
    ($($t:ty => $u:ty),*) => {$(
        impl Key for $t {
            #[inline]
            fn key_bytes(&self) -> Cow<'_, [u8]> {
                Cow::Owned(((*self as $u) ^ (1 << (<$u>::BITS - 1))).to_be_bytes().to_vec())
            }
            fn encode_component(&self, out: &mut Vec<u8>, _last: bool) {
                out.extend_from_slice(&self.key_bytes());
            }
        }
    )*};
}
signed!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

macro_rules! tuple {
    ($($name:ident)+; $lastname:ident) => {
        #[allow(non_snake_case)]
        impl<$($name: Key,)+ $lastname: Key> Key for ($($name,)+ $lastname) {
            fn key_bytes(&self) -> Cow<'_, [u8]> {
                let ($($name,)+ $lastname) = self;
                let mut out = Vec::new();
                $($name.encode_component(&mut out, false);)+
                $lastname.encode_component(&mut out, true);
                Cow::Owned(out)
            }
            fn encode_component(&self, out: &mut Vec<u8>, last: bool) {
                let ($($name,)+ $lastname) = self;
                $($name.encode_component(out, false);)+
                $lastname.encode_component(out, last);
            }
        }
    };
}
tuple!(A; B);
tuple!(A B; C);
tuple!(A B C; D);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_keys_are_their_bytes() {
        assert_eq!(&*b"k1".key_bytes(), b"k1");
        let slice: &[u8] = b"k1";
        assert_eq!(&*slice.key_bytes(), b"k1");
        assert_eq!(&*vec![1u8, 2].key_bytes(), &[1, 2]);
        assert_eq!(&*String::from("ab").key_bytes(), b"ab");
        assert_eq!(&*[9u8; 3].key_bytes(), &[9, 9, 9]);
    }

    #[test]
    fn integer_and_tuple_keys_keep_their_order() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in ints.windows(2) {
            assert!(w[0].key_bytes() < w[1].key_bytes(), "{w:?}");
        }
        let uns = [0u64, 1, 255, 256, u64::MAX];
        for w in uns.windows(2) {
            assert!(w[0].key_bytes() < w[1].key_bytes(), "{w:?}");
        }
        // Tuples: component by component, strings of any length and content.
        let mut tuples = vec![
            ("", ""),
            ("", "a"),
            ("a", ""),
            ("a", "\0"),
            ("a\0", ""),
            ("a\0b", ""),
            ("ab", ""),
            ("b", ""),
        ];
        let sorted = tuples.clone();
        tuples.sort_by_key(|t| t.key_bytes().into_owned());
        assert_eq!(tuples, sorted);
        assert!((1u32, "b").key_bytes() < (2u32, "a").key_bytes());
        assert!((1u64, 2u8, "x").key_bytes() < (1u64, 3u8, "").key_bytes());
        // Distinct tuples never share an encoding.
        assert_ne!(("a", "bc").key_bytes(), ("ab", "c").key_bytes());
    }
}
