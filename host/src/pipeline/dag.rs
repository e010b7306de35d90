//! Dependency order of stages.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use super::Stage;

/// Stage names in an order where each comes after everything it needs
/// (file order among independent stages), or the stages of one cycle.
pub fn order(stages: &IndexMap<String, Stage>) -> Result<Vec<String>, Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        stages: &'a IndexMap<String, Stage>,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Err(cycle);
            }
            None => {}
        }
        marks.insert(name, Mark::Visiting);
        path.push(name);
        if let Some(stage) = stages.get(name) {
            for need in &stage.needs {
                visit(need, stages, marks, path, out)?;
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        out.push(name.to_string());
        Ok(())
    }
    let mut marks = HashMap::new();
    let mut out = Vec::new();
    for name in stages.keys() {
        visit(name, stages, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// Every stage `name` depends on, directly or not.
pub fn upstream(stages: &IndexMap<String, Stage>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = stages
        .get(name)
        .map(|s| s.needs.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(next) = todo.pop() {
        if seen.insert(next.to_string())
            && let Some(stage) = stages.get(next)
        {
            todo.extend(stage.needs.iter().map(String::as_str));
        }
    }
    seen
}
