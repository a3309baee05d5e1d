//! The static memory plan: where in one arena each scheduled value lives.
//!
//! The schedule is cut into levels (a step's level is one more than its
//! operands' highest), and steps of one level may run at the same time. A
//! value is live from its step's level through the last level that reads it
//! (directly or through a view); outputs, update values and parameters live
//! to the end. Values whose live ranges overlap get disjoint places; the rest
//! share memory. Places are chosen largest value first, each at the lowest
//! 64-byte-aligned offset free over its whole live range.
//!
//! Fed inputs are not in the arena: a run reads the caller's tensors in place.

/// Where one scheduled value lives before planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A region of its own, of this many f32 elements.
    Owned(usize),
    /// A view into step `of`'s value, starting `offset` elements in.
    View {
        /// The step whose value holds this one.
        of: usize,
        /// Offset in elements.
        offset: usize,
    },
    /// A fed input, read from the caller's tensor during a run.
    Feed,
    /// Computed by its step over the memory of step `of`'s value, which no
    /// one reads afterwards (an element-wise op writing over a dead operand;
    /// see [`write_in_place`]).
    InPlace {
        /// The operand step whose memory the result takes over.
        of: usize,
    },
}

/// Decides which steps write their result over one of their operands, and
/// marks them `InPlace` in `values`. `candidates[i]` lists the operand
/// positions step `i` could overwrite (an element-wise op reading that operand
/// at the output's shape); `reads[i]` are its operands. An operand qualifies
/// when it lives in the arena (not a feed), nothing sharing its memory is
/// pinned or read by another operand of step `i`, and every other step that
/// reads that memory runs at a lower level (so it is done before step `i`
/// starts, even with the steps of a level running in parallel). Returns, per
/// step, the position of the operand it overwrites.
pub fn write_in_place(
    values: &mut [Value],
    levels: &[usize],
    reads: &[Vec<usize>],
    pinned: &[bool],
    candidates: &[Vec<usize>],
) -> Vec<Option<usize>> {
    let n = values.len();
    // memory groups (a view shares its base's memory, an in-place result its
    // operand's) and, per group root, what the checks need of its members
    let mut group: Vec<usize> = (0..n).collect();
    let mut stats: Vec<GroupStats> = (0..n)
        .map(|m| GroupStats::new(pinned[m] || values[m] == Value::Feed))
        .collect();
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (j, ops) in reads.iter().enumerate() {
        for &x in ops {
            readers[x].push(j);
        }
    }
    for (m, rs) in readers.iter().enumerate() {
        for &j in rs {
            stats[m].read_by(levels[j], j);
        }
    }
    fn find(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    fn join(group: &mut [usize], stats: &mut [GroupStats], i: usize, root: usize) {
        let r = find(group, i);
        if r != root {
            group[r] = root;
            let moved = stats[r];
            stats[root].merge(&moved);
        }
    }
    for (i, v) in values.iter().enumerate() {
        if let Value::View { of, .. } = *v {
            let r = find(&mut group, of);
            join(&mut group, &mut stats, i, r);
        }
    }
    let mut chosen = vec![None; n];
    for i in 0..n {
        for &pos in &candidates[i] {
            let o = reads[i][pos];
            let g = find(&mut group, o);
            let shared_elsewhere = reads[i]
                .iter()
                .enumerate()
                .any(|(p, &x)| p != pos && find(&mut group, x) == g);
            let ok = !shared_elsewhere
                && !stats[g].kept
                && stats[g].latest_reader_besides(i) < levels[i] as isize;
            if ok {
                values[i] = Value::InPlace { of: o };
                join(&mut group, &mut stats, i, g);
                chosen[i] = Some(pos);
                break;
            }
        }
    }
    chosen
}

/// What [`write_in_place`] needs of a memory group's members: whether any
/// must be kept (pinned or a feed), and the two latest readers (level,
/// step) that are different steps, so "every reader but step `i` runs at a
/// lower level" takes no walk over the members.
#[derive(Clone, Copy, Debug)]
struct GroupStats {
    kept: bool,
    latest: [Option<(usize, usize)>; 2],
}

impl GroupStats {
    /// A group of one member that must be `kept` (pinned or a feed).
    fn new(kept: bool) -> GroupStats {
        GroupStats {
            kept,
            latest: [None, None],
        }
    }
    /// Counts step `j` at `level` as a reader.
    fn read_by(&mut self, level: usize, j: usize) {
        let r = Some((level, j));
        match self.latest {
            [Some(a), _] if a.1 == j => self.latest[0] = r.max(Some(a)),
            [a, Some(b)] if b.1 == j => {
                let b = r.max(Some(b));
                self.latest = if b > a { [b, a] } else { [a, b] };
            }
            [a, b] => {
                self.latest = if r > a {
                    [r, a]
                } else if r > b {
                    [a, r]
                } else {
                    [a, b]
                }
            }
        }
    }
    fn merge(&mut self, other: &GroupStats) {
        self.kept |= other.kept;
        for (level, j) in other.latest.into_iter().flatten() {
            self.read_by(level, j);
        }
    }
    /// The latest level of a reader other than step `i` (−1 if none).
    fn latest_reader_besides(&self, i: usize) -> isize {
        self.latest
            .into_iter()
            .flatten()
            .find(|r| r.1 != i)
            .map_or(-1, |r| r.0 as isize)
    }
}

/// Where a planned value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Elements starting at this offset in the arena.
    Arena(usize),
    /// Elements starting at this offset in feed number `feed`.
    Feed {
        /// Index among the fed inputs (schedule order).
        feed: usize,
        /// Offset in elements.
        offset: usize,
    },
}

/// The arena layout of a schedule.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// Where each step's value is.
    pub place: Vec<Place>,
    /// Whether each step's value is a view into another step's (or a feed).
    pub view: Vec<bool>,
    /// Each step's level.
    pub level: Vec<usize>,
    /// Arena size in f32 elements (the peak of simultaneously live values).
    pub arena_len: usize,
    /// Sum of the sizes of all values the arena holds, had none shared memory.
    pub unshared_len: usize,
    /// For each step that writes its result over an operand, that operand's
    /// position (see [`write_in_place`]); set by the caller that chose them.
    pub in_place: Vec<Option<usize>>,
}

/// Arena offsets are multiples of this many elements (64 bytes).
const ALIGN: usize = 16;

impl MemoryPlan {
    /// Plans `values` (in schedule order; a view refers to an earlier step).
    /// `levels[i]` is step `i`'s level, `reads[i]` the steps it reads, and
    /// `pinned[i]` whether its value must survive the whole run (outputs,
    /// update values, parameters).
    pub fn build(
        values: &[Value],
        levels: &[usize],
        reads: &[Vec<usize>],
        pinned: &[bool],
    ) -> Self {
        let n = values.len();
        // the value each step's data belongs to, and the feed numbers
        let mut root = Vec::with_capacity(n);
        let mut feeds = vec![usize::MAX; n];
        let mut next_feed = 0;
        for (i, v) in values.iter().enumerate() {
            root.push(match *v {
                Value::View { of, .. } | Value::InPlace { of } => root[of],
                _ => i,
            });
            if *v == Value::Feed {
                feeds[i] = next_feed;
                next_feed += 1;
            }
        }
        // live range of each root value: [its level, last reader's level]
        let end = levels.iter().copied().max().unwrap_or(0) + 1;
        let mut last = levels.to_vec();
        for (i, ops) in reads.iter().enumerate() {
            for &o in ops {
                last[root[o]] = last[root[o]].max(levels[i]);
            }
        }
        for i in 0..n {
            if pinned[i] {
                last[root[i]] = end;
            }
        }
        let owned: Vec<(usize, usize)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match *v {
                Value::Owned(len) => Some((i, len)),
                _ => None,
            })
            .collect();
        let live = |i: usize| (levels[i], last[i]);
        let (offset, arena_len) = match owned.len() <= BY_SIZE_MAX {
            true => place_by_size(&owned, live, n),
            false => place_in_order(&owned, live, n),
        };
        let unshared_len = owned
            .iter()
            .map(|&(_, len)| len.next_multiple_of(ALIGN))
            .sum();
        let mut place = Vec::with_capacity(n);
        for (i, v) in values.iter().enumerate() {
            place.push(match *v {
                Value::Owned(_) => Place::Arena(offset[i]),
                Value::Feed => Place::Feed {
                    feed: feeds[i],
                    offset: 0,
                },
                Value::InPlace { of } => place[of],
                Value::View { of, offset: off } => match place[of] {
                    Place::Arena(o) => Place::Arena(o + off),
                    Place::Feed { feed, offset } => Place::Feed {
                        feed,
                        offset: offset + off,
                    },
                },
            });
        }
        MemoryPlan {
            place,
            view: values
                .iter()
                .map(|v| matches!(v, Value::View { .. } | Value::Feed))
                .collect(),
            level: levels.to_vec(),
            arena_len,
            unshared_len,
            in_place: vec![None; n],
        }
    }
    /// Whether step `i` reads another value's memory instead of computing into its own.
    pub fn is_view(&self, i: usize) -> bool {
        self.view[i]
    }
    /// Peak arena bytes.
    pub fn bytes(&self) -> usize {
        self.arena_len * std::mem::size_of::<f32>()
    }
}

/// Up to this many values the planner packs them largest first (the
/// tighter arena, but each placement looks at every value placed before);
/// beyond, in schedule order (near-linear time: a graph of 20,000 values
/// plans in milliseconds).
const BY_SIZE_MAX: usize = 4096;

/// Largest value first (ties: earlier level, then step), each at the lowest
/// aligned offset free over its whole live range. Returns each step's offset
/// (`owned` steps only) and the arena length.
fn place_by_size(
    owned: &[(usize, usize)],
    live: impl Fn(usize) -> (usize, usize),
    n: usize,
) -> (Vec<usize>, usize) {
    let mut order = owned.to_vec();
    order.sort_by_key(|&(i, len)| (std::cmp::Reverse(len), live(i).0, i));
    let mut offset = vec![0usize; n];
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (start, end, from, to)
    let mut arena_len = 0;
    for &(i, len) in &order {
        let (from, to) = live(i);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| p.2 <= to && from <= p.3)
            .map(|p| (p.0, p.1))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (s, e) in busy {
            if at + len <= s {
                break;
            }
            at = at.max(e.next_multiple_of(ALIGN));
        }
        offset[i] = at;
        placed.push((at, at + len, from, to));
        arena_len = arena_len.max(at + len);
    }
    (offset, arena_len)
}

/// In schedule order (first level, then step): before a value is placed,
/// the regions of values whose live range ended before its first level are
/// freed (merged with free neighbours); it takes the lowest free region that
/// fits, else the top of the arena. Returns as [`place_by_size`].
fn place_in_order(
    owned: &[(usize, usize)],
    live: impl Fn(usize) -> (usize, usize),
    n: usize,
) -> (Vec<usize>, usize) {
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap};
    let mut order = owned.to_vec();
    order.sort_by_key(|&(i, _)| (live(i).0, i));
    let mut offset = vec![0usize; n];
    let mut free: BTreeMap<usize, usize> = BTreeMap::new(); // start → end
    let mut busy = BinaryHeap::new(); // (last level, start, end) of placed regions
    let (mut top, mut arena_len) = (0usize, 0usize);
    for (i, len) in order {
        let (from, to) = live(i);
        while let Some(&Reverse((last, s, e))) = busy.peek() {
            if last >= from {
                break;
            }
            busy.pop();
            release(&mut free, s, e);
        }
        let size = len.next_multiple_of(ALIGN);
        let fits = free
            .iter()
            .find(|(&s, &e)| e - s >= size)
            .map(|(&s, &e)| (s, e));
        let at = match (fits, free.iter().next_back().map(|(&s, &e)| (s, e))) {
            (Some((s, e)), _) => {
                free.remove(&s);
                if s + size < e {
                    free.insert(s + size, e);
                }
                s
            }
            // the highest free region reaches the top: grow the arena from it
            (None, Some((s, e))) if e == top => {
                free.remove(&s);
                top = s + size;
                s
            }
            (None, _) => {
                top += size;
                top - size
            }
        };
        offset[i] = at;
        busy.push(Reverse((to, at, at + size)));
        arena_len = arena_len.max(at + len);
    }
    (offset, arena_len)
}

/// Returns `[s, e)` to the free regions, merged with the free regions that
/// end at `s` or start at `e`.
fn release(free: &mut std::collections::BTreeMap<usize, usize>, mut s: usize, mut e: usize) {
    if let Some((&ps, &pe)) = free.range(..s).next_back() {
        if pe == s {
            free.remove(&ps);
            s = ps;
        }
    }
    if let Some(ne) = free.remove(&e) {
        e = ne;
    }
    free.insert(s, e);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain a → b → c → d of equal sizes needs two regions, not four,
    /// and every pair of values alive at once is disjoint.
    #[test]
    fn dead_values_share_memory_and_live_ones_never_overlap() {
        let values = vec![Value::Owned(100); 4];
        let levels = vec![0, 1, 2, 3];
        let reads = vec![vec![], vec![0], vec![1], vec![2]];
        let plan = MemoryPlan::build(&values, &levels, &reads, &[false, false, false, true]);
        assert_eq!(plan.arena_len, 112 + 100); // two aligned regions
        assert_eq!(plan.unshared_len, 4 * 112);
        let at = |i: usize| match plan.place[i] {
            Place::Arena(o) => o,
            other => panic!("{other:?}"),
        };
        for i in 0..3 {
            assert!(
                at(i).abs_diff(at(i + 1)) >= 100,
                "{i} and {} overlap",
                i + 1
            );
        }
    }

    /// Both placement strategies, on random values and live ranges: values
    /// alive at the same level never share memory, every value lies in the
    /// arena at an aligned offset, and the arena is at least the peak of the
    /// values alive at once and at most their unshared sum.
    #[test]
    fn both_strategies_keep_values_alive_together_apart() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % m
        };
        for case in 0..200 {
            let n = 1 + next(60);
            let owned: Vec<(usize, usize)> = (0..n).map(|i| (i, 1 + next(100))).collect();
            let ranges: Vec<(usize, usize)> = (0..n)
                .map(|_| {
                    let from = next(20);
                    (from, from + next(8))
                })
                .collect();
            let live = |i: usize| ranges[i];
            for (name, (offset, arena_len)) in [
                ("by size", place_by_size(&owned, live, n)),
                ("in order", place_in_order(&owned, live, n)),
            ] {
                let peak = (0..30)
                    .map(|l| {
                        owned
                            .iter()
                            .filter(|&&(i, _)| ranges[i].0 <= l && l <= ranges[i].1)
                            .map(|&(_, len)| len)
                            .sum::<usize>()
                    })
                    .max()
                    .unwrap();
                let unshared: usize = owned
                    .iter()
                    .map(|&(_, len)| len.next_multiple_of(ALIGN))
                    .sum();
                assert!(
                    arena_len >= peak && arena_len <= unshared,
                    "{name} case {case}"
                );
                for &(i, li) in &owned {
                    assert_eq!(offset[i] % ALIGN, 0, "{name} case {case}");
                    assert!(offset[i] + li <= arena_len, "{name} case {case}");
                    for &(j, lj) in &owned {
                        let together = ranges[i].0 <= ranges[j].1 && ranges[j].0 <= ranges[i].1;
                        let apart = offset[i] + li <= offset[j] || offset[j] + lj <= offset[i];
                        assert!(
                            i == j || !together || apart,
                            "{name} case {case}: {i} and {j}"
                        );
                    }
                }
            }
        }
    }

    /// In schedule order, a chain of equal values alternates between two
    /// regions as largest-first packing does.
    #[test]
    fn in_order_reuses_freed_regions() {
        let owned: Vec<(usize, usize)> = (0..6).map(|i| (i, 100)).collect();
        let (offset, arena_len) = place_in_order(&owned, |i| (i, i + 1), 6);
        assert_eq!(arena_len, 112 + 100);
        assert_eq!(offset, vec![0, 112, 0, 112, 0, 112]);
    }

    /// Element-wise steps write over an operand only when they are its last
    /// reader, strictly after every other reader's level, and it is an arena
    /// value nobody pins; the result then shares that operand's place.
    #[test]
    fn in_place_writes_only_over_dead_arena_operands() {
        // 0: feed x; 1: a = f(x); 2: b = relu(a) [a's only reader: in place];
        // 3: c = g(b); 4: d = b + c [b also read by 3, a level lower: in place over b];
        // 5: e = relu(d) pinned output → may still overwrite d;
        // 6: p = f(x) read by 7 and 8 at the same level: neither overwrites it
        // 9: q = relu(x) [a feed: never overwritten]; 10: r = s(q, q) [same memory twice]
        let mut values = vec![
            Value::Feed,
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
            Value::Owned(32),
        ];
        let levels = vec![0, 1, 2, 3, 4, 5, 1, 2, 2, 1, 2];
        let reads = vec![
            vec![],
            vec![0],
            vec![1],
            vec![2],
            vec![2, 3],
            vec![4],
            vec![0],
            vec![6],
            vec![6],
            vec![0],
            vec![9, 9],
        ];
        let mut pinned = vec![false; 11];
        pinned[5] = true;
        let elementwise = |k: &[usize]| k.to_vec();
        let candidates = vec![
            vec![],
            elementwise(&[0]),
            elementwise(&[0]),
            vec![],
            elementwise(&[0, 1]),
            elementwise(&[0]),
            vec![],
            elementwise(&[0]),
            elementwise(&[0]),
            elementwise(&[0]),
            elementwise(&[0, 1]),
        ];
        let chosen = write_in_place(&mut values, &levels, &reads, &pinned, &candidates);
        assert_eq!(
            chosen,
            vec![
                None,
                None,
                Some(0),
                None,
                Some(0),
                Some(0),
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert_eq!(values[2], Value::InPlace { of: 1 });
        let plan = MemoryPlan::build(&values, &levels, &reads, &pinned);
        assert_eq!(plan.place[2], plan.place[1]);
        assert_eq!(plan.place[4], plan.place[1]);
        assert_eq!(plan.place[5], plan.place[1]);
        // c (read by d) must not sit where a/b/d live
        let at = |i: usize| match plan.place[i] {
            Place::Arena(o) => o,
            other => panic!("{other:?}"),
        };
        assert!(at(3).abs_diff(at(1)) >= 32);
        assert!(!plan.is_view(2), "an in-place step is still computed");
    }

    /// A value read late (by the last step) stays live under every value
    /// computed in between; views extend their base's life.
    #[test]
    fn views_and_late_readers_keep_values_alive() {
        // 0: x; 1: view of 0; 2: y = f(0); 3: z = g(2); 4: h(1, 3)
        let values = vec![
            Value::Owned(64),
            Value::View { of: 0, offset: 0 },
            Value::Owned(64),
            Value::Owned(64),
            Value::Owned(64),
        ];
        let levels = vec![0, 0, 1, 2, 3];
        let reads = vec![vec![], vec![0], vec![0], vec![2], vec![1, 3]];
        let plan = MemoryPlan::build(
            &values,
            &levels,
            &reads,
            &[false, false, false, false, true],
        );
        let at = |i: usize| match plan.place[i] {
            Place::Arena(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(1), at(0));
        for j in [2, 3, 4] {
            assert!(at(0).abs_diff(at(j)) >= 64, "x overlaps value {j}");
        }
        assert!(at(3).abs_diff(at(4)) >= 64);
        assert_eq!(plan.view, vec![false, true, false, false, false]);
    }
}
