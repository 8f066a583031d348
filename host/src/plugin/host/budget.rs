//! What a capability hands a guest, bounded before it is built.
//!
//! wasmtime's hostcall fuel bounds what the host copies *out of* a guest in one call. The
//! other direction has no such bound in wasmtime: a host function returns a `Vec` or a
//! `String` that it built in full, and only then is it copied into the guest. So every
//! capability counts what it is about to hand back against an [`Answer`] budget per host call
//! (the plugin's `max_answer_bytes`), item by item while it gathers them, and fails with
//! [`TooLarge`] before building more: a `get-many` of one large value named 4,096 times
//! costs a comparison, not a gigabyte. Error strings are cut by [`error_text`].

use std::fmt::Display;

/// Longest error string a capability hands a guest; the text may come from a remote server.
pub const ERROR_TEXT_MAX: usize = 1024;

/// The bytes one host call may still hand its guest.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    limit: usize,
    used: usize,
}

/// An answer that would pass its budget: nothing of it was built.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the answer would be over {needed} bytes, more than the plugin's max_answer_bytes ({limit}); ask for less in one call, or raise max_answer_bytes"
)]
pub struct TooLarge {
    /// What it had reached when it was stopped.
    pub needed: usize,
    /// The budget.
    pub limit: usize,
}

impl Answer {
    /// A budget of `limit` bytes for one host call.
    pub fn new(limit: usize) -> Self {
        Self { limit, used: 0 }
    }

    /// Counts `n` more bytes, or fails once the total passes the budget.
    pub fn take(&mut self, n: usize) -> Result<(), TooLarge> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(TooLarge {
                needed: self.used,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// The whole budget.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// `e` as text for a guest, cut to [`ERROR_TEXT_MAX`] bytes on a character boundary.
pub fn error_text(e: impl Display) -> String {
    crate::plugin::output::truncated(&e.to_string(), ERROR_TEXT_MAX).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_stops_at_its_budget() {
        let mut a = Answer::new(10);
        a.take(6).unwrap();
        a.take(4).unwrap();
        let e = a.take(1).unwrap_err();
        assert_eq!((e.needed, e.limit), (11, 10));
        assert!(Answer::new(1).take(usize::MAX).is_err());
    }

    #[test]
    fn error_texts_are_cut() {
        assert!(error_text("é".repeat(4000)).len() <= ERROR_TEXT_MAX + 64);
    }
}
