//! String ids ↔ dense indices, so the engine's indexes are vectors of small integers.

use std::collections::HashMap;

/// Interns ids of one kind. Indices are never reused.
#[derive(Default, Debug, Clone)]
pub(crate) struct Interner {
    map: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The index of `id`, allocating one if new.
    pub(crate) fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.map.get(id) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(id.into());
        self.map.insert(id.into(), i);
        i
    }

    /// The index of `id`, if known.
    pub(crate) fn get(&self, id: &str) -> Option<u32> {
        self.map.get(id).copied()
    }

    /// The id of index `i`.
    pub(crate) fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map(|s| &**s).unwrap_or("")
    }
}
