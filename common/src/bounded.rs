//! Containers with a hard upper bound, for everything decoded from untrusted
//! bytes.
//!
//! `postcard` decodes a `Vec` by trusting the length prefix as a size hint.
//! A 1 MiB frame of empty strings would otherwise become tens of MiB of
//! `String` headers. These types refuse a length over their bound *before*
//! allocating, so the memory a decoded message can take is fixed by its type.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// A value was longer than its type allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {len} long, over the limit of {max}")]
pub struct TooLong {
    /// What was too long ("list", "string").
    pub what: &'static str,
    /// Its length.
    pub len: usize,
    /// The bound.
    pub max: usize,
}

/// A `Vec<T>` holding at most `MAX` elements.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// An empty list.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Wraps `items`, refusing more than `MAX` of them.
    pub fn try_from_vec(items: Vec<T>) -> Result<Self, TooLong> {
        if items.len() > MAX {
            return Err(TooLong { what: "list", len: items.len(), max: MAX });
        }
        Ok(Self(items))
    }

    /// Appends `item`, or hands it back when the list is full.
    pub fn try_push(&mut self, item: T) -> Result<(), T> {
        if self.0.len() >= MAX {
            return Err(item);
        }
        self.0.push(item);
        Ok(())
    }

    /// Keeps the first `MAX` items of `items` and drops the rest.
    pub fn truncating(mut items: Vec<T>) -> Self {
        items.truncate(MAX);
        Self(items)
    }

    /// The bound.
    pub const fn max_len() -> usize {
        MAX
    }

    /// Unwraps into the inner `Vec`.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }

    /// Keeps only the items `keep` accepts (a list can only shrink).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.0.retain(keep);
    }

    /// The items, mutably (the length, and so the bound, cannot change).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: fmt::Debug, const MAX: usize> fmt::Debug for BoundedVec<T, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const MAX: usize> TryFrom<Vec<T>> for BoundedVec<T, MAX> {
    type Error = TooLong;
    fn try_from(items: Vec<T>) -> Result<Self, TooLong> {
        Self::try_from_vec(items)
    }
}

impl<'a, T, const MAX: usize> IntoIterator for &'a BoundedVec<T, MAX> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
            type Value = BoundedVec<T, MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {MAX} items")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hinted = seq.size_hint().unwrap_or(0);
                if hinted > MAX {
                    return Err(de::Error::invalid_length(hinted, &self));
                }
                let mut items = Vec::with_capacity(hinted);
                while let Some(item) = seq.next_element()? {
                    if items.len() >= MAX {
                        return Err(de::Error::invalid_length(MAX + 1, &self));
                    }
                    items.push(item);
                }
                Ok(BoundedVec(items))
            }
        }

        deserializer.deserialize_seq(BoundedVisitor::<T, MAX>(PhantomData))
    }
}

/// A UTF-8 string of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// Wraps `text`, refusing more than `MAX` bytes.
    pub fn try_new(text: impl Into<String>) -> Result<Self, TooLong> {
        let text = text.into();
        if text.len() > MAX {
            return Err(TooLong { what: "string", len: text.len(), max: MAX });
        }
        Ok(Self(text))
    }

    /// Keeps at most `MAX` bytes of `text`, cut at a character boundary, for
    /// values read from the device that may be longer than we care to send.
    pub fn truncating(text: &str) -> Self {
        let mut end = text.len().min(MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self(text[..end].to_owned())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MAX: usize> Serialize for BoundedString<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedString<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<const MAX: usize>;

        impl<const MAX: usize> Visitor<'_> for StrVisitor<MAX> {
            type Value = BoundedString<MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {MAX} bytes")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if text.len() > MAX {
                    return Err(E::invalid_length(text.len(), &self));
                }
                Ok(BoundedString(text.to_owned()))
            }
        }

        deserializer.deserialize_str(StrVisitor::<MAX>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_over_bound_is_refused_before_allocation() {
        // A length prefix of 2^32-1 elements with no elements behind it.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(postcard::from_bytes::<BoundedVec<u8, 16>>(&bytes).is_err());
        // 17 real elements against a bound of 16: refused by the bound itself.
        let mut bytes = vec![17u8];
        bytes.extend([0u8; 17]);
        let err = postcard::from_bytes::<BoundedVec<u8, 16>>(&bytes).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
    }

    #[test]
    fn vec_round_trips_at_bound() {
        let list = BoundedVec::<u16, 4>::try_from_vec(vec![1, 2, 3, 4]).unwrap();
        let bytes = postcard::to_stdvec(&list).unwrap();
        assert_eq!(postcard::from_bytes::<BoundedVec<u16, 4>>(&bytes).unwrap(), list);
        assert!(postcard::from_bytes::<BoundedVec<u16, 3>>(&bytes).is_err());
    }

    #[test]
    fn string_bound_and_truncation() {
        assert!(BoundedString::<3>::try_new("abcd").is_err());
        assert_eq!(BoundedString::<3>::truncating("aé€").as_str(), "aé");
        let bytes = postcard::to_stdvec(&"hello").unwrap();
        assert!(postcard::from_bytes::<BoundedString<4>>(&bytes).is_err());
        assert_eq!(postcard::from_bytes::<BoundedString<5>>(&bytes).unwrap().as_str(), "hello");
    }
}
