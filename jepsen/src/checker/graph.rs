//! The transaction dependency graph and its cycle search.
//!
//! Owns the ww/wr/rw edge set between committed transactions, strongly connected components
//! (Tarjan, iterative so a 10k-transaction history cannot overflow the stack), and the search
//! for one concrete, short cycle per component, classified the way Elle does. It knows nothing
//! about ops or keys' meanings: `list_append` builds the graph and renders what is found here.
//!
//! Per component we report the most specific cycle class only (G0, then G1c, then G-single,
//! then G2-item): one clear witness per tangle is what a reader can act on, and the component
//! size says how much more is caught in it. Specificity matters because a G0 cycle also makes
//! every weaker class trivially present.

use std::collections::{HashMap, VecDeque};

use crate::checker::AnomalyKind;
use crate::history::Key;

pub(crate) const WW: u8 = 1;
pub(crate) const WR: u8 = 2;
pub(crate) const RW: u8 = 4;
const ALL: u8 = WW | WR | RW;

/// How many reachability searches one component may spend looking for a G-single witness
/// before settling for whatever cycle a plain search finds. Keeps a pathological history
/// (one huge component) from turning the check quadratic.
const G_SINGLE_SEARCH_BUDGET: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepKind {
    Ww,
    Wr,
    Rw,
}

impl DepKind {
    fn bit(self) -> u8 {
        match self {
            DepKind::Ww => WW,
            DepKind::Wr => WR,
            DepKind::Rw => RW,
        }
    }

    fn slot(self) -> usize {
        match self {
            DepKind::Ww => 0,
            DepKind::Wr => 1,
            DepKind::Rw => 2,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            DepKind::Ww => "ww",
            DepKind::Wr => "wr",
            DepKind::Rw => "rw",
        }
    }
}

#[derive(Debug, Clone)]
struct Edge {
    to: usize,
    kinds: u8,
    /// The first key that produced each kind; meaningful only where `kinds` has the bit.
    keys: [Key; 3],
}

impl Edge {
    fn key(&self, kind: DepKind) -> Key {
        self.keys[kind.slot()]
    }
}

/// One step of a reported cycle, in graph node ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) kind: DepKind,
    pub(crate) key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundCycle {
    pub(crate) kind: AnomalyKind,
    pub(crate) steps: Vec<Step>,
    pub(crate) component_size: usize,
}

#[derive(Debug, Default)]
pub(crate) struct DepGraph {
    adj: Vec<Vec<Edge>>,
    slots: HashMap<(usize, usize), usize>,
}

impl DepGraph {
    pub(crate) fn new(nodes: usize) -> DepGraph {
        DepGraph {
            adj: vec![Vec::new(); nodes],
            slots: HashMap::new(),
        }
    }

    /// Adds `from -kind[key]-> to`. Self-edges carry no information about other transactions
    /// and are dropped.
    pub(crate) fn add(&mut self, from: usize, to: usize, kind: DepKind, key: Key) {
        if from == to || from >= self.adj.len() || to >= self.adj.len() {
            return;
        }
        let adj = &mut self.adj;
        let slot = *self.slots.entry((from, to)).or_insert_with(|| {
            adj[from].push(Edge {
                to,
                kinds: 0,
                keys: [0; 3],
            });
            adj[from].len() - 1
        });
        let edge = &mut self.adj[from][slot];
        if edge.kinds & kind.bit() == 0 {
            edge.kinds |= kind.bit();
            edge.keys[kind.slot()] = key;
        }
    }

    #[cfg(test)]
    pub(crate) fn has_edge(&self, from: usize, to: usize, kind: DepKind) -> bool {
        self.adj.get(from).is_some_and(|edges| {
            edges
                .iter()
                .any(|e| e.to == to && e.kinds & kind.bit() != 0)
        })
    }

    /// One classified cycle per nontrivial strongly connected component, ordered by the
    /// component's smallest node.
    pub(crate) fn cycles(&self) -> Vec<FoundCycle> {
        let mut components: Vec<Vec<usize>> = tarjan(&self.adj, ALL)
            .into_iter()
            .filter(|c| c.len() > 1)
            .collect();
        components.sort_by_key(|c| c[0]);
        let mut component_of = vec![usize::MAX; self.adj.len()];
        let mut position = vec![0usize; self.adj.len()];
        for (ci, members) in components.iter().enumerate() {
            for (pos, &node) in members.iter().enumerate() {
                component_of[node] = ci;
                position[node] = pos;
            }
        }
        components
            .iter()
            .enumerate()
            .filter_map(|(ci, members)| {
                let local = self.restrict(members, ci, &component_of, &position);
                let steps = classify_component(&local)?;
                let steps: Vec<Step> = steps
                    .into_iter()
                    .map(|s| Step {
                        from: members[s.from],
                        to: members[s.to],
                        ..s
                    })
                    .collect();
                Some(FoundCycle {
                    kind: classify_steps(&steps),
                    steps,
                    component_size: members.len(),
                })
            })
            .collect()
    }

    /// The component as its own graph, with nodes renumbered 0..members.len().
    fn restrict(
        &self,
        members: &[usize],
        component: usize,
        component_of: &[usize],
        position: &[usize],
    ) -> Vec<Vec<Edge>> {
        members
            .iter()
            .map(|&node| {
                let mut edges: Vec<Edge> = self.adj[node]
                    .iter()
                    .filter(|e| component_of[e.to] == component)
                    .map(|e| Edge {
                        to: position[e.to],
                        ..e.clone()
                    })
                    .collect();
                edges.sort_by_key(|e| e.to);
                edges
            })
            .collect()
    }
}

/// Strongly connected components over the edges allowed by `mask`, in completion order
/// (reverse topological order of the condensation), trivial ones included.
fn tarjan(adj: &[Vec<Edge>], mask: u8) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut frames: Vec<(usize, usize)> = Vec::new();
    let mut next = 0usize;
    let mut components = Vec::new();

    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        frames.push((root, 0));

        while let Some(&(v, mut pos)) = frames.last() {
            let mut child = None;
            while pos < adj[v].len() {
                let edge = &adj[v][pos];
                pos += 1;
                if edge.kinds & mask == 0 {
                    continue;
                }
                let w = edge.to;
                if index[w] == UNSEEN {
                    child = Some(w);
                    break;
                }
                if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            }
            if let Some(top) = frames.last_mut() {
                top.1 = pos;
            }
            if let Some(w) = child {
                index[w] = next;
                low[w] = next;
                next += 1;
                stack.push(w);
                on_stack[w] = true;
                frames.push((w, 0));
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components
}

/// Shortest path `from -> ... -> to` over `mask` edges, as a node list including both ends.
/// With `from == to` this is the shortest cycle through `from`.
fn shortest_path(adj: &[Vec<Edge>], mask: u8, from: usize, to: usize) -> Option<Vec<usize>> {
    const NONE: usize = usize::MAX;
    let mut parent = vec![NONE; adj.len()];
    let mut seen = vec![false; adj.len()];
    let mut queue = VecDeque::new();
    seen[from] = true;
    queue.push_back(from);
    while let Some(v) = queue.pop_front() {
        for edge in adj[v].iter().filter(|e| e.kinds & mask != 0) {
            let w = edge.to;
            if w == to {
                let mut path = vec![to];
                let mut cur = v;
                loop {
                    path.push(cur);
                    if cur == from {
                        break;
                    }
                    cur = parent[cur];
                }
                path.reverse();
                return Some(path);
            }
            if !seen[w] {
                seen[w] = true;
                parent[w] = v;
                queue.push_back(w);
            }
        }
    }
    None
}

/// Labels each hop of a node path with the weakest dependency the edge carries (ww before wr
/// before rw), so the class of the cycle is not overstated.
fn label(adj: &[Vec<Edge>], path: &[usize], mask: u8) -> Option<Vec<Step>> {
    path.windows(2)
        .map(|hop| {
            let edge = adj[hop[0]].iter().find(|e| e.to == hop[1])?;
            let kind = [DepKind::Ww, DepKind::Wr, DepKind::Rw]
                .into_iter()
                .find(|k| edge.kinds & mask & k.bit() != 0)?;
            Some(Step {
                from: hop[0],
                to: hop[1],
                kind,
                key: edge.key(kind),
            })
        })
        .collect()
}

fn cycle_in(adj: &[Vec<Edge>], mask: u8) -> Option<Vec<Step>> {
    let component = tarjan(adj, mask).into_iter().find(|c| c.len() > 1)?;
    let start = component[0];
    let path = shortest_path(adj, mask, start, start)?;
    label(adj, &path, mask)
}

fn classify_component(adj: &[Vec<Edge>]) -> Option<Vec<Step>> {
    if let Some(steps) = cycle_in(adj, WW) {
        return Some(steps);
    }
    if let Some(steps) = cycle_in(adj, WW | WR) {
        return Some(steps);
    }
    if let Some(steps) = g_single(adj) {
        return Some(steps);
    }
    let path = shortest_path(adj, ALL, 0, 0)?;
    label(adj, &path, ALL)
}

/// A cycle with exactly one rw edge: an rw edge `a -> b` plus a ww/wr path back from `b` to
/// `a`. Called only once ww/wr alone are known to be acyclic, so the ww/wr components are
/// single nodes and their completion order is a reverse topological order: `b` can reach `a`
/// only if `a` completed first, which prunes most candidates without a search.
fn g_single(adj: &[Vec<Edge>]) -> Option<Vec<Step>> {
    let mut finished_at = vec![0usize; adj.len()];
    for (i, component) in tarjan(adj, WW | WR).iter().enumerate() {
        for &node in component {
            finished_at[node] = i;
        }
    }
    let mut best: Option<Vec<Step>> = None;
    let mut searches = 0;
    for (a, edges) in adj.iter().enumerate() {
        for edge in edges.iter().filter(|e| e.kinds & RW != 0) {
            let b = edge.to;
            if finished_at[a] > finished_at[b] {
                continue;
            }
            if searches == G_SINGLE_SEARCH_BUDGET {
                return best;
            }
            searches += 1;
            let Some(back) = shortest_path(adj, WW | WR, b, a) else {
                continue;
            };
            let Some(mut steps) = label(adj, &back, WW | WR) else {
                continue;
            };
            steps.insert(
                0,
                Step {
                    from: a,
                    to: b,
                    kind: DepKind::Rw,
                    key: edge.key(DepKind::Rw),
                },
            );
            if best.as_ref().is_none_or(|b| steps.len() < b.len()) {
                best = Some(steps);
            }
        }
    }
    best
}

pub(crate) fn classify_steps(steps: &[Step]) -> AnomalyKind {
    let rw = steps.iter().filter(|s| s.kind == DepKind::Rw).count();
    let wr = steps.iter().filter(|s| s.kind == DepKind::Wr).count();
    match (rw, wr) {
        (0, 0) => AnomalyKind::G0,
        (0, _) => AnomalyKind::G1c,
        (1, _) => AnomalyKind::GSingle,
        _ => AnomalyKind::G2Item,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(cycle: &FoundCycle) -> Vec<DepKind> {
        cycle.steps.iter().map(|s| s.kind).collect()
    }

    fn assert_closed(cycle: &FoundCycle) {
        let steps = &cycle.steps;
        assert!(steps.len() >= 2);
        for pair in steps.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        assert_eq!(steps[steps.len() - 1].to, steps[0].from);
    }

    #[test]
    fn acyclic_graph_has_no_cycles() {
        let mut g = DepGraph::new(4);
        g.add(0, 1, DepKind::Ww, 1);
        g.add(1, 2, DepKind::Wr, 1);
        g.add(0, 2, DepKind::Rw, 2);
        g.add(2, 3, DepKind::Rw, 2);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn self_edges_are_dropped() {
        let mut g = DepGraph::new(2);
        g.add(1, 1, DepKind::Ww, 1);
        assert!(!g.has_edge(1, 1, DepKind::Ww));
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn prefers_g0_inside_a_component_with_rw_edges() {
        let mut g = DepGraph::new(3);
        g.add(0, 1, DepKind::Rw, 5);
        g.add(1, 0, DepKind::Rw, 5);
        g.add(1, 2, DepKind::Ww, 7);
        g.add(2, 1, DepKind::Ww, 7);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].kind, AnomalyKind::G0);
        assert_eq!(cycles[0].component_size, 3);
        assert_eq!(kinds(&cycles[0]), vec![DepKind::Ww, DepKind::Ww]);
        assert_closed(&cycles[0]);
    }

    #[test]
    fn g_single_is_found_even_when_a_shorter_g2_cycle_exists() {
        // 0 -rw-> 1 -rw-> 0 is the shortest cycle (G2-item), but 0 -rw-> 1 -ww-> 2 -wr-> 0
        // has exactly one rw edge and is the more specific finding.
        let mut g = DepGraph::new(3);
        g.add(0, 1, DepKind::Rw, 1);
        g.add(1, 0, DepKind::Rw, 1);
        g.add(1, 2, DepKind::Ww, 2);
        g.add(2, 0, DepKind::Wr, 3);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].kind, AnomalyKind::GSingle);
        assert_eq!(
            kinds(&cycles[0]),
            vec![DepKind::Rw, DepKind::Ww, DepKind::Wr]
        );
        assert_closed(&cycles[0]);
    }

    #[test]
    fn g2_item_when_every_cycle_needs_two_rw_edges() {
        let mut g = DepGraph::new(2);
        g.add(0, 1, DepKind::Rw, 1);
        g.add(1, 0, DepKind::Rw, 2);
        let cycles = g.cycles();
        assert_eq!(cycles[0].kind, AnomalyKind::G2Item);
        assert_eq!(cycles[0].steps[0].key, 1);
        assert_eq!(cycles[0].steps[1].key, 2);
    }

    #[test]
    fn separate_components_each_get_a_cycle() {
        let mut g = DepGraph::new(5);
        g.add(0, 1, DepKind::Ww, 1);
        g.add(1, 0, DepKind::Wr, 1);
        g.add(3, 4, DepKind::Ww, 2);
        g.add(4, 3, DepKind::Ww, 2);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 2);
        assert_eq!(cycles[0].kind, AnomalyKind::G1c);
        assert_eq!(cycles[1].kind, AnomalyKind::G0);
        assert_eq!(cycles[1].steps[0].from, 3);
    }

    #[test]
    fn long_chain_does_not_overflow_the_stack() {
        let n = 200_000;
        let mut g = DepGraph::new(n);
        for i in 0..n - 1 {
            g.add(i, i + 1, DepKind::Ww, 1);
        }
        g.add(n - 1, 0, DepKind::Ww, 1);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].steps.len(), n);
        assert_closed(&cycles[0]);
    }
}
