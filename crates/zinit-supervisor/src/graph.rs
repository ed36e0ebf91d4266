//! The dependency graph: `after` edges between units, cycles, and orders.

use std::collections::{BTreeMap, BTreeSet};

/// Every elementary cycle found by a depth-first search (each reported once,
/// starting at its smallest name), given `unit -> units it starts after`.
pub fn cycles(deps: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = deps.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in deps.keys() {
        if marks[start.as_str()] != Mark::New {
            continue;
        }
        // Iterative DFS keeping the current path.
        let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start.as_str(), Mark::Active);
        while let Some((node, next)) = path.last().copied() {
            let edges = deps.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if next == edges.len() {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            }
            path.last_mut().expect("non-empty").1 += 1;
            let target = edges[next].as_str();
            match marks.get(target).copied() {
                Some(Mark::New) => {
                    marks.insert(target, Mark::Active);
                    path.push((target, 0));
                }
                Some(Mark::Active) => {
                    let pos = path
                        .iter()
                        .position(|(n, _)| *n == target)
                        .expect("on path");
                    let mut cycle: Vec<String> =
                        path[pos..].iter().map(|(n, _)| n.to_string()).collect();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.cmp(b.1))
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    cycle.rotate_left(min);
                    found.insert(cycle);
                }
                _ => {}
            }
        }
    }
    found.into_iter().collect()
}

/// For each unit, the units that start after it (its dependents).
pub fn dependents(deps: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> =
        deps.keys().map(|k| (k.clone(), Vec::new())).collect();
    for (unit, afters) in deps {
        for dep in afters {
            out.entry(dep.clone()).or_default().push(unit.clone());
        }
    }
    out
}

/// For each unit in `live`, the units of `live` it depends on, directly or
/// through units that are not live (an exited oneshot, a stopped, failed,
/// blocked or invalid unit): each with the units in between (empty when
/// direct), the shortest such chain. A live dependency ends the search along
/// its path: what it depends on is its own business.
pub fn live_dependencies(
    deps: &BTreeMap<String, Vec<String>>,
    live: &BTreeSet<String>,
) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for unit in live {
        let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut seen: BTreeSet<&str> = BTreeSet::from([unit.as_str()]);
        // Breadth first, so that each dependency comes with its shortest chain.
        let mut queue: std::collections::VecDeque<(&str, Vec<String>)> =
            std::collections::VecDeque::from([(unit.as_str(), Vec::new())]);
        while let Some((node, via)) = queue.pop_front() {
            for dep in deps.get(node).map(Vec::as_slice).unwrap_or(&[]) {
                if !seen.insert(dep.as_str()) {
                    continue;
                }
                if live.contains(dep) {
                    found.insert(dep.clone(), via.clone());
                } else {
                    let mut further = via.clone();
                    further.push(dep.clone());
                    queue.push_back((dep.as_str(), further));
                }
            }
        }
        out.insert(unit.clone(), found);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn finds_a_cycle_and_names_it_from_its_smallest_member() {
        let g = graph(&[("c", &["a"]), ("a", &["b"]), ("b", &["c"]), ("d", &["a"])]);
        assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    }

    #[test]
    fn a_diamond_has_no_cycle() {
        let g = graph(&[
            ("top", &["l", "r"]),
            ("l", &["base"]),
            ("r", &["base"]),
            ("base", &[]),
        ]);
        assert!(cycles(&g).is_empty());
        assert_eq!(dependents(&g)["base"], vec!["l", "r"]);
    }

    #[test]
    fn finds_separate_cycles() {
        let g = graph(&[("a", &["b"]), ("b", &["a"]), ("x", &["y"]), ("y", &["x"])]);
        assert_eq!(cycles(&g).len(), 2);
    }

    #[test]
    fn a_live_dependency_through_exited_units_is_found_with_the_units_between() {
        // db -> migrate -> app, cache -> app; migrate and seed are not live.
        let g = graph(&[
            ("db", &[]),
            ("migrate", &["db"]),
            ("seed", &["migrate"]),
            ("app", &["seed", "cache"]),
            ("cache", &[]),
            ("web", &["app"]),
        ]);
        let live: BTreeSet<String> = ["db", "app", "cache", "web"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let found = live_dependencies(&g, &live);
        assert_eq!(
            found["app"],
            BTreeMap::from([
                (
                    "db".to_string(),
                    vec!["seed".to_string(), "migrate".to_string()]
                ),
                ("cache".to_string(), vec![]),
            ])
        );
        // web reaches db only through app, which is live: app's business.
        assert_eq!(found["web"].keys().collect::<Vec<_>>(), ["app"]);
        assert!(found["db"].is_empty());
    }

    #[test]
    fn a_cycle_through_units_that_are_not_live_ends_the_search() {
        let g = graph(&[("a", &["x"]), ("x", &["y"]), ("y", &["x", "b"]), ("b", &[])]);
        let live: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let found = live_dependencies(&g, &live);
        assert_eq!(found["a"]["b"], vec!["x".to_string(), "y".to_string()]);
    }
}
