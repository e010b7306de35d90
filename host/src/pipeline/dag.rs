//! Dependency order of stages.
//!
//! Walked with explicit stacks, not recursion: the length of a chain of
//! `needs` is bounded only by the size of the file.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use indexmap::IndexMap;

/// The `needs` of every stage of the file, by name (only names of stages).
pub type Graph = IndexMap<String, Vec<String>>;

/// Stage names in an order where each comes after everything it needs
/// (file order among independent stages), or the stages of one cycle.
pub fn order(graph: &Graph) -> Result<Vec<String>, Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut out = Vec::with_capacity(graph.len());
    for root in graph.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        // The path from `root`, each with the index of its next need.
        let mut path: Vec<(&str, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Visiting);
        while let Some((name, next)) = path.last_mut() {
            let needs = graph.get(*name).map_or(&[][..], Vec::as_slice);
            let Some(need) = needs.get(*next) else {
                marks.insert(name, Mark::Done);
                out.push(name.to_string());
                path.pop();
                continue;
            };
            *next += 1;
            match marks.get(need.as_str()) {
                Some(Mark::Done) => {}
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|(n, _)| n == need).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|(n, _)| n.to_string()).collect();
                    cycle.push(need.clone());
                    return Err(cycle);
                }
                None => {
                    marks.insert(need, Mark::Visiting);
                    path.push((need, 0));
                }
            }
        }
    }
    Ok(out)
}

/// The stages one stage depends on, directly or not: a set of bits over
/// the pipeline's stage names (sorted, shared by every stage's set). In a
/// long chain every stage has hundreds before it; a set of names per stage
/// made memory quadratic in the stages (17 MB for a 1000-stage chain).
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    names: Arc<[Arc<str>]>,
    bits: Box<[u64]>,
}

impl Upstream {
    pub fn contains(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| (**n).cmp(name))
            .is_ok_and(|i| self.has(i))
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.has(*i))
            .map(|(_, n)| &**n)
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    fn has(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

impl serde::Serialize for Upstream {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Every stage's name, sorted, shared by the [`Upstream`] sets.
pub fn names(graph: &Graph) -> Arc<[Arc<str>]> {
    let sorted: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(name, needs)| std::iter::once(name).chain(needs))
        .map(String::as_str)
        .collect();
    sorted.into_iter().map(Arc::from).collect()
}

/// Every stage `name` depends on, directly or not (`names` from [`names`]).
pub fn upstream(graph: &Graph, name: &str, names: &Arc<[Arc<str>]>) -> Upstream {
    let mut bits = vec![0u64; names.len().div_ceil(64)].into_boxed_slice();
    let position = |n: &str| names.binary_search_by(|x| (**x).cmp(n)).ok();
    let mut todo: Vec<&str> = graph
        .get(name)
        .map(|needs| needs.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(next) = todo.pop() {
        let Some(i) = position(next) else { continue };
        if bits[i / 64] & (1 << (i % 64)) == 0 {
            bits[i / 64] |= 1 << (i % 64);
            if let Some(needs) = graph.get(next) {
                todo.extend(needs.iter().map(String::as_str));
            }
        }
    }
    Upstream {
        names: names.clone(),
        bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(n, needs)| (n.to_string(), needs.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn orders_needs_first_keeping_file_order() {
        let g = graph(&[("c", &["b"]), ("a", &[]), ("b", &["a"]), ("d", &[])]);
        assert_eq!(order(&g).unwrap(), ["a", "b", "c", "d"]);
        assert_eq!(
            upstream(&g, "c", &names(&g))
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn finds_a_cycle_and_its_stages() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &["a"])]);
        assert_eq!(order(&g).unwrap_err(), ["a", "c", "b", "a"]);
        assert_eq!(upstream(&g, "d", &names(&g)).len(), 3);
    }

    #[test]
    fn upstream_sets_answer_like_sets_of_names_across_many_stages() {
        // 150 stages: the bits span three words. `x<i>` needs `x<i-1>`; `side`
        // needs `x10`; `lone` needs nothing; `late` needs `side` and `x149`.
        let mut g = Graph::new();
        for i in 0..150 {
            let needs = if i == 0 {
                vec![]
            } else {
                vec![format!("x{:03}", i - 1)]
            };
            g.insert(format!("x{i:03}"), needs);
        }
        g.insert("side".into(), vec!["x010".into()]);
        g.insert("lone".into(), vec![]);
        g.insert("late".into(), vec!["side".into(), "x149".into()]);
        let names = names(&g);
        let late = upstream(&g, "late", &names);
        assert_eq!(late.len(), 151);
        assert!(late.contains("side") && late.contains("x000") && late.contains("x149"));
        assert!(!late.contains("late") && !late.contains("lone") && !late.contains("nope"));
        let listed: Vec<&str> = late.iter().collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(listed, sorted, "in name order");
        let side = upstream(&g, "side", &names);
        assert_eq!(
            serde_json::to_value(&side).unwrap(),
            serde_json::json!((0..=10).map(|i| format!("x{i:03}")).collect::<Vec<_>>())
        );
        let lone = upstream(&g, "lone", &names);
        assert!(lone.is_empty() && lone.iter().next().is_none());
        assert!(Upstream::default().is_empty() && !Upstream::default().contains("x000"));
    }

    #[test]
    fn a_chain_far_longer_than_the_stack_is_ordered() {
        let mut g = Graph::new();
        for i in 0..200_000 {
            let needs = if i == 0 {
                vec![]
            } else {
                vec![format!("s{}", i - 1)]
            };
            g.insert(format!("s{i}"), needs);
        }
        g.reverse();
        let order = order(&g).unwrap();
        assert_eq!(order[0], "s0");
        assert_eq!(order.len(), 200_000);
    }
}
