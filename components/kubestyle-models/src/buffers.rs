//! Where a forward pass's activations live: a plan of buffers computed from the schedule, and
//! the buffers kept from one pass to the next ([`Buffers`]).
//!
//! A fresh activation costs page faults and zeroing on first touch: 15–20% of the first layer's
//! time at 1024² (128 MB). Reusing buffers naively (any free one that fits, kept between passes)
//! measured 5–8% faster but raised peak RSS by 58–148 MB, because free buffers were held across
//! the pass's peak. The plan assigns each activation a slot when it is produced, reusing a slot
//! whose occupant is no longer read. A slot is *kept* — its buffer held for the whole pass and
//! between passes, shared by all its activations — only while that keeps the resident memory,
//! simulated step by step, under the peak of a pass without reuse; other slots allocate per
//! activation as before. MultiStyle26 keeps its first layer's 128 MB slot this way (its peak is
//! at the first layers); the plan decides per network and image size.

use std::sync::Mutex;

/// Which slot each activation uses, and each slot's size in floats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Each activation's slot.
    pub slot_of: Vec<usize>,
    /// Each slot's size (the largest of its activations) and whether it is kept.
    pub sizes: Vec<usize>,
    pub kept: Vec<bool>,
}

impl Plan {
    /// For activations `0..sizes.len()` (0 = the input, a = step a - 1's output) of
    /// `sizes[a]` floats, each last read by step `last[a]`. A slot is free for `a` when its
    /// occupant's last reader ran before step `a - 1` started; a slot is as large as the
    /// largest activation it holds, and the slots' total is what a pass holds. Each activation
    /// takes, among the free slots and a new one, the choice whose plan — completed greedily
    /// (the smallest free slot that holds each later one, else the largest free slot, grown,
    /// else a new slot) — has the smallest total: plain greedy wastes a whole large slot on
    /// TransformerNet (its two 32-channel 1024² activations ended up in different slots).
    pub fn new(sizes: &[usize], last: &[usize]) -> Plan {
        assert_eq!(
            sizes.len(),
            last.len(),
            "a size and a last use per activation"
        );
        let mut p = Partial::default();
        for a in 0..sizes.len() {
            let best = p
                .choices(a, last)
                .into_iter()
                .min_by_key(|&c| {
                    let mut q = p.clone();
                    q.assign(a, c, sizes);
                    for b in a + 1..sizes.len() {
                        let g = q.greedy(b, sizes, last);
                        q.assign(b, g, sizes);
                    }
                    q.sizes.iter().sum::<usize>()
                })
                .unwrap_or(p.sizes.len());
            p.assign(a, best, sizes);
        }
        let kept = kept_slots(&p.slot_of, &p.sizes, sizes, last);
        Plan {
            slot_of: p.slot_of,
            sizes: p.sizes,
            kept,
        }
    }
}

/// Which slots to keep: the largest first, each while the resident memory at every step stays
/// within the peak of a pass without reuse. At step `t` (which writes activation `t + 1`) the
/// activations alive are those written by then and read at `t` or later; a kept slot counts
/// its whole size at every step, any other activation its own size while alive.
fn kept_slots(
    slot_of: &[usize],
    slot_sizes: &[usize],
    need: &[usize],
    last: &[usize],
) -> Vec<bool> {
    let steps = need.len().saturating_sub(1);
    let alive = |a: usize, t: usize| a <= t + 1 && last[a] >= t;
    let resident = |kept: &[bool], t: usize| -> usize {
        let held: usize = (0..slot_sizes.len())
            .filter(|&s| kept[s])
            .map(|s| slot_sizes[s])
            .sum();
        let own: usize = (0..need.len())
            .filter(|&a| alive(a, t) && !kept[slot_of[a]])
            .map(|a| need[a])
            .sum();
        held + own
    };
    let mut kept = vec![false; slot_sizes.len()];
    let peak = (0..steps).map(|t| resident(&kept, t)).max().unwrap_or(0);
    let mut by_size: Vec<usize> = (0..slot_sizes.len()).collect();
    by_size.sort_by_key(|&s| std::cmp::Reverse(slot_sizes[s]));
    for s in by_size {
        kept[s] = true;
        if (0..steps).any(|t| resident(&kept, t) > peak) {
            kept[s] = false;
        }
    }
    kept
}

/// A plan for the activations before some `a`.
#[derive(Debug, Clone, Default)]
struct Partial {
    slot_of: Vec<usize>,
    sizes: Vec<usize>,
    /// The activation each slot holds now.
    occupant: Vec<usize>,
}

impl Partial {
    /// The slots free for activation `a`, and a new slot (index `sizes.len()`).
    fn choices(&self, a: usize, last: &[usize]) -> Vec<usize> {
        let mut c: Vec<usize> = (0..self.sizes.len())
            .filter(|&s| a >= 1 && last[self.occupant[s]] < a - 1)
            .collect();
        c.push(self.sizes.len());
        c
    }

    /// The greedy choice for `a`: the smallest free slot that holds it, else the largest free
    /// slot, else a new one.
    fn greedy(&self, a: usize, sizes: &[usize], last: &[usize]) -> usize {
        let free = self.choices(a, last);
        let free = &free[..free.len() - 1];
        let fits = free
            .iter()
            .filter(|&&s| self.sizes[s] >= sizes[a])
            .min_by_key(|&&s| self.sizes[s]);
        let grow = || free.iter().max_by_key(|&&s| self.sizes[s]);
        fits.or_else(grow).copied().unwrap_or(self.sizes.len())
    }

    fn assign(&mut self, a: usize, s: usize, sizes: &[usize]) {
        if s == self.sizes.len() {
            self.sizes.push(0);
            self.occupant.push(a);
        }
        self.sizes[s] = self.sizes[s].max(sizes[a]);
        self.occupant[s] = a;
        self.slot_of.push(s);
    }
}

/// The slots' buffers kept between forward passes (the last pass to finish wins; a pass that
/// finds them taken by a concurrent one allocates its own). A clone starts empty.
#[derive(Default)]
pub(crate) struct Buffers(Mutex<Vec<Vec<f32>>>);

impl Buffers {
    /// The kept buffers for `plan`, one per slot (empty for slots not kept, and where a kept
    /// buffer is more than twice the slot's size: the image got smaller, memory follows it).
    pub fn take(&self, plan: &Plan) -> Vec<Vec<f32>> {
        let mut kept = self
            .0
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        kept.resize_with(plan.sizes.len(), Vec::new);
        kept.truncate(plan.sizes.len());
        for (s, b) in kept.iter_mut().enumerate() {
            if !plan.kept[s] || b.capacity() > 2 * plan.sizes[s] {
                *b = Vec::new();
            }
        }
        kept
    }

    /// Keep these buffers for the next pass.
    pub fn keep(&self, bufs: Vec<Vec<f32>>) {
        if let Ok(mut g) = self.0.lock() {
            *g = bufs;
        }
    }
}

impl Clone for Buffers {
    fn clone(&self) -> Buffers {
        Buffers::default()
    }
}

impl std::fmt::Debug for Buffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|g| g.len()).unwrap_or(0);
        write!(f, "Buffers({n} kept)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::{Step, last_uses};
    use kubestyle_kernels::Post;

    /// No two activations alive at once share a slot, and every slot holds its activations.
    fn check(plan: &Plan, sizes: &[usize], last: &[usize]) {
        for a in 0..sizes.len() {
            assert!(
                plan.sizes[plan.slot_of[a]] >= sizes[a],
                "activation {a} fits"
            );
            for b in a + 1..sizes.len() {
                // b is produced by step b - 1; a is still read then when last[a] >= b - 1.
                if last[a] >= b - 1 {
                    assert_ne!(plan.slot_of[a], plan.slot_of[b], "{a} and {b} overlap");
                }
            }
        }
    }

    #[test]
    fn a_chain_ping_pongs_between_two_slots() {
        // Each step reads only the previous activation.
        let sizes = [3, 32, 8, 2, 2, 4];
        let last = [0, 1, 2, 3, 4, usize::MAX];
        let plan = Plan::new(&sizes, &last);
        check(&plan, &sizes, &last);
        assert_eq!(plan.sizes.len(), 2);
        assert_eq!(plan.sizes.iter().sum::<usize>(), 8 + 32, "{plan:?}");
    }

    /// A network's schedule: 3 layers, `blocks` residual blocks, 3 layers.
    fn schedule(blocks: usize) -> Vec<usize> {
        let step = |residual| Step {
            layer: 0,
            post: Post::Relu,
            residual,
            norm: true,
        };
        let mut steps = vec![step(None); 3];
        for r in 0..blocks {
            steps.push(step(None));
            steps.push(step(Some(3 + 2 * r)));
        }
        steps.extend([step(None); 3]);
        last_uses(&steps)
    }

    #[test]
    fn multistyle26_holds_its_peak_and_one_block_slot() {
        // At 1024², in units of 256² floats: input, 32 ch at 1024², 32 at 512², 13 × 32 at
        // 256², 8 at 512², 4 at 1024², 3 at 1024².
        let last = schedule(6);
        let mut sizes = vec![48, 512, 128];
        sizes.extend([32; 13]);
        sizes.extend([32, 64, 48]);
        let plan = Plan::new(&sizes, &last);
        check(&plan, &sizes, &last);
        // The peak of live activations is 512 + 128; a residual block needs a third slot.
        assert!(
            plan.sizes.iter().sum::<usize>() <= 512 + 128 + 32,
            "{plan:?}"
        );
        // The first layer's slot is kept (held all along, the peak is where it is in use).
        assert!(plan.kept[plan.slot_of[1]], "{plan:?}");
        assert_eq!(plan.sizes[plan.slot_of[1]], 512);
    }

    #[test]
    fn transformer_net_keeps_its_two_large_activations_in_one_slot() {
        // At 1024², in units of 256² floats: input, 32 ch at 1024², 64 at 512², 11 × 128 at
        // 256², 64 at 512², 32 at 1024², 3 at 1024².
        let last = schedule(5);
        let mut sizes = vec![48, 512, 256];
        sizes.extend([128; 11]);
        sizes.extend([256, 512, 48]);
        let plan = Plan::new(&sizes, &last);
        check(&plan, &sizes, &last);
        // Plain greedy took 512 + 512 + 128 (the 64-channel upsampling output landed in the
        // first layer's slot, so the next needed another); the peak is 512 + 256.
        assert!(
            plan.sizes.iter().sum::<usize>() <= 512 + 256 + 128,
            "{plan:?}"
        );
        // Kept slots never raise the peak: the residual blocks (3 × 128 alive) cannot afford
        // to hold both large slots idle, so at most one of them is kept.
        let held: usize = (0..plan.sizes.len())
            .filter(|&s| plan.kept[s])
            .map(|s| plan.sizes[s])
            .sum();
        assert!(held <= 512 + 128, "{plan:?}");
    }
}
