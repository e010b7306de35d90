//! Dependency order of stages.
//!
//! Walked with explicit stacks, not recursion: the length of a chain of
//! `needs` is bounded only by the size of the file.

use std::collections::{BTreeSet, HashMap};

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

/// Every stage `name` depends on, directly or not.
pub fn upstream(graph: &Graph, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = graph
        .get(name)
        .map(|needs| needs.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(next) = todo.pop() {
        if seen.insert(next.to_string())
            && let Some(needs) = graph.get(next)
        {
            todo.extend(needs.iter().map(String::as_str));
        }
    }
    seen
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
            upstream(&g, "c").into_iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn finds_a_cycle_and_its_stages() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &["a"])]);
        assert_eq!(order(&g).unwrap_err(), ["a", "c", "b", "a"]);
        assert_eq!(upstream(&g, "d").len(), 3);
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
