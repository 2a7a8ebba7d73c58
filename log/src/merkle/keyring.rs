//! The checkpoint keys of one log over its life: the first key and each key a
//! rotation introduced, with the tree sizes each may sign.
//!
//! Validity: the first key signs checkpoints of every size up to the size of
//! the last checkpoint it signed before the first rotation
//! (`old_last_size`); a rotated-in key signs sizes strictly greater than the
//! `old_last_size` of the rotation that introduced it, up to its own
//! successor's `old_last_size`. The ranges never overlap, so a retired key
//! can never sign a checkpoint for a later state of the log.

use super::note::{NoteError, SignedCheckpoint, Verifier};

/// One key of the ring.
#[derive(Debug, Clone)]
pub struct Epoch {
    /// The verifier.
    pub verifier: Verifier,
    /// Sizes strictly greater than this are signed by this key (`None`: the first key, from size 0).
    pub after: Option<u64>,
    /// Leaf index of the `key_rotation` entry that introduced the key (`None` for the first key).
    pub entry_index: Option<u64>,
}

/// The keys of a log, in rotation order.
#[derive(Debug, Clone)]
pub struct KeyRing {
    epochs: Vec<Epoch>,
}

impl KeyRing {
    /// A ring of the first key only.
    pub fn single(first: Verifier) -> Self {
        KeyRing { epochs: vec![Epoch { verifier: first, after: None, entry_index: None }] }
    }

    /// Adds the key introduced by the rotation entry at `entry_index`, the old
    /// key's last checkpoint covering `old_last_size` leaves.
    pub fn push(&mut self, key: Verifier, entry_index: u64, old_last_size: u64) -> Result<(), NoteError> {
        let last = self.epochs.last().expect("a ring has a first key");
        if entry_index >= old_last_size {
            return Err(NoteError::BadKey(format!(
                "rotation entry {entry_index} is not covered by the old key's last checkpoint (size {old_last_size})"
            )));
        }
        if last.after.is_some_and(|a| old_last_size <= a || entry_index < a)
            || last.entry_index.is_some_and(|e| entry_index <= e)
        {
            return Err(NoteError::BadKey("rotations out of order".into()));
        }
        if self.epochs.iter().any(|e| e.verifier.key_string() == key.key_string()) {
            return Err(NoteError::BadKey(format!("key {} is already in the history", key.key_string())));
        }
        self.epochs.push(Epoch { verifier: key, after: Some(old_last_size), entry_index: Some(entry_index) });
        Ok(())
    }

    /// The keys, first to current.
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// The first key (the trust anchor).
    pub fn first(&self) -> &Verifier {
        &self.epochs[0].verifier
    }

    /// The key signing checkpoints now.
    pub fn current(&self) -> &Verifier {
        &self.epochs.last().expect("a ring has a first key").verifier
    }

    /// The key allowed to sign a checkpoint of `size` leaves.
    pub fn key_for(&self, size: u64) -> &Verifier {
        let k = self.epochs.iter().rposition(|e| e.after.is_none_or(|a| size > a)).unwrap_or(0);
        &self.epochs[k].verifier
    }

    /// The tree sizes key `k` may sign, as text (for error messages).
    fn range(&self, k: usize) -> String {
        let from = self.epochs[k].after.map(|a| a + 1).unwrap_or(0);
        match self.epochs.get(k + 1).and_then(|e| e.after) {
            Some(to) => format!("{from}..={to}"),
            None => format!("{from}.."),
        }
    }

    /// Opens `note` if it is signed by the key of the ring valid at its tree
    /// size. A signature by another key of the ring (a retired key signing a
    /// later size, or a new key signing an earlier one) and a signature by a
    /// key outside the ring are refused.
    pub fn open(&self, note: &str) -> Result<SignedCheckpoint, NoteError> {
        for (k, e) in self.epochs.iter().enumerate() {
            let Ok(cp) = e.verifier.open(note) else { continue };
            let want = self.key_for(cp.checkpoint.size);
            if want.key_string() != e.verifier.key_string() {
                return Err(NoteError::BadSignature(format!(
                    "{} (checkpoint of size {} is signed by key {}, which may sign only sizes {}; size {} needs key {})",
                    e.verifier.name,
                    cp.checkpoint.size,
                    e.verifier.key_string(),
                    self.range(k),
                    cp.checkpoint.size,
                    want.key_string()
                )));
            }
            return Ok(cp);
        }
        // Report the malformed-note error of the first key when there is one.
        match self.first().open(note) {
            Err(NoteError::BadSignature(_)) | Ok(_) => Err(NoteError::BadSignature(format!(
                "{} (no key of the log's key history, {} key(s), signed it)",
                self.first().name,
                self.epochs.len()
            ))),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Checkpoint, Signer};

    fn cp(size: u64) -> Checkpoint {
        Checkpoint { origin: "o".into(), size, root: [size as u8; 32] }
    }

    #[test]
    fn each_key_signs_only_its_range() {
        let a = Signer::from_seed("o", &[1; 32]).unwrap();
        let b = Signer::from_seed("o", &[2; 32]).unwrap();
        let forged = Signer::from_seed("o", &[3; 32]).unwrap();
        let mut ring = KeyRing::single(a.verifier());
        ring.push(b.verifier(), 9, 10).unwrap();
        assert!(ring.open(&a.sign(&cp(10)).note).is_ok());
        assert!(ring.open(&b.sign(&cp(11)).note).is_ok());
        let late = ring.open(&a.sign(&cp(11)).note).unwrap_err().to_string();
        assert!(late.contains("may sign only sizes 0..=10"), "{late}");
        let early = ring.open(&b.sign(&cp(10)).note).unwrap_err().to_string();
        assert!(early.contains("may sign only sizes 11.."), "{early}");
        let f = ring.open(&forged.sign(&cp(12)).note).unwrap_err().to_string();
        assert!(f.contains("no key of the log's key history"), "{f}");
        assert!(ring.push(forged.verifier(), 5, 12).is_err(), "rotation entry before the previous one");
        assert!(ring.push(forged.verifier(), 12, 12).is_err(), "entry not covered by the old key's checkpoint");
    }
}
