//! Collections whose length is checked while they are decoded.
//!
//! Every variable-length field that arrives from the network is one of these, so a
//! hostile length prefix is refused before anything is allocated for it.

use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `Vec<T>` of at most `N` elements, enforced when decoding and when building.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedVec<T, const N: usize>(Vec<T>);

/// Returned when a value would exceed its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} elements exceed the bound of {max}")]
pub struct BoundExceeded {
    /// The length that was offered.
    pub len: usize,
    /// The bound.
    pub max: usize,
}

impl<T, const N: usize> BoundedVec<T, N> {
    /// The bound.
    pub const MAX: usize = N;

    /// An empty vector.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Wraps `items`, or fails if there are more than `N`.
    pub fn try_from_vec(items: Vec<T>) -> Result<Self, BoundExceeded> {
        if items.len() > N {
            return Err(BoundExceeded { len: items.len(), max: N });
        }
        Ok(Self(items))
    }

    /// Appends `item`, or gives it back if the vector is full.
    pub fn try_push(&mut self, item: T) -> Result<(), T> {
        if self.0.len() >= N {
            return Err(item);
        }
        self.0.push(item);
        Ok(())
    }

    /// The elements as a slice.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// Unwraps the inner vector.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T, const N: usize> Default for BoundedVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Deref for BoundedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for BoundedVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const N: usize> TryFrom<Vec<T>> for BoundedVec<T, N> {
    type Error = BoundExceeded;
    fn try_from(items: Vec<T>) -> Result<Self, BoundExceeded> {
        Self::try_from_vec(items)
    }
}

impl<T: Serialize, const N: usize> Serialize for BoundedVec<T, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

struct BoundedVecVisitor<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for BoundedVecVisitor<T, N> {
    type Value = BoundedVec<T, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {N} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        if hint > N {
            return Err(de::Error::invalid_length(hint, &self));
        }
        let mut items = Vec::with_capacity(hint);
        while let Some(item) = seq.next_element()? {
            if items.len() == N {
                return Err(de::Error::invalid_length(N + 1, &self));
            }
            items.push(item);
        }
        Ok(BoundedVec(items))
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for BoundedVec<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BoundedVecVisitor::<T, N>(PhantomData))
    }
}

/// A byte string of at most `N` bytes, encoded as one length-prefixed byte run.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedBytes<const N: usize>(Vec<u8>);

impl<const N: usize> BoundedBytes<N> {
    /// Copies `bytes`, or fails if there are more than `N`.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, BoundExceeded> {
        if bytes.len() > N {
            return Err(BoundExceeded { len: bytes.len(), max: N });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// Wraps `bytes`, or fails if there are more than `N`.
    pub fn try_from_vec(bytes: Vec<u8>) -> Result<Self, BoundExceeded> {
        if bytes.len() > N {
            return Err(BoundExceeded { len: bytes.len(), max: N });
        }
        Ok(Self(bytes))
    }
}

impl<const N: usize> Deref for BoundedBytes<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl<const N: usize> Serialize for BoundedBytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

struct BoundedBytesVisitor<const N: usize>;

impl<const N: usize> Visitor<'_> for BoundedBytesVisitor<N> {
    type Value = BoundedBytes<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {N} bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        BoundedBytes::try_from_slice(v).map_err(|_| E::invalid_length(v.len(), &self))
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BoundedBytesVisitor::<N>)
    }
}

/// A UTF-8 string of at most `N` bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedString<const N: usize>(String);

impl<const N: usize> BoundedString<N> {
    /// Copies `s`, or fails if it is longer than `N` bytes.
    pub fn try_new(s: &str) -> Result<Self, BoundExceeded> {
        if s.len() > N {
            return Err(BoundExceeded { len: s.len(), max: N });
        }
        Ok(Self(s.to_owned()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> Deref for BoundedString<N> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const N: usize> fmt::Display for BoundedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const N: usize> Serialize for BoundedString<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

struct BoundedStringVisitor<const N: usize>;

impl<const N: usize> Visitor<'_> for BoundedStringVisitor<N> {
    type Value = BoundedString<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {N} bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        BoundedString::try_new(v).map_err(|_| E::invalid_length(v.len(), &self))
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedString<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(BoundedStringVisitor::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_bound_is_enforced_when_building() {
        assert!(BoundedVec::<u8, 2>::try_from_vec(vec![1, 2]).is_ok());
        let err = BoundedVec::<u8, 2>::try_from_vec(vec![1, 2, 3]).unwrap_err();
        assert_eq!(err, BoundExceeded { len: 3, max: 2 });
        let mut v = BoundedVec::<u8, 1>::new();
        assert_eq!(v.try_push(7), Ok(()));
        assert_eq!(v.try_push(8), Err(8));
    }

    #[test]
    fn vec_bound_is_enforced_when_decoding() {
        let bytes = postcard::to_allocvec(&vec![1u32, 2, 3]).unwrap();
        assert!(postcard::from_bytes::<BoundedVec<u32, 3>>(&bytes).is_ok());
        assert!(postcard::from_bytes::<BoundedVec<u32, 2>>(&bytes).is_err());
    }

    #[test]
    fn bytes_and_strings_round_trip_and_refuse_oversize() {
        let b = BoundedBytes::<4>::try_from_slice(b"abcd").unwrap();
        let enc = postcard::to_allocvec(&b).unwrap();
        assert_eq!(postcard::from_bytes::<BoundedBytes<4>>(&enc).unwrap(), b);
        assert!(postcard::from_bytes::<BoundedBytes<3>>(&enc).is_err());
        assert!(BoundedBytes::<3>::try_from_slice(b"abcd").is_err());

        let s = BoundedString::<5>::try_new("héllo".get(0..3).unwrap()).unwrap();
        let enc = postcard::to_allocvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<BoundedString<5>>(&enc).unwrap(), s);
        assert!(postcard::from_bytes::<BoundedString<2>>(&enc).is_err());
    }
}
