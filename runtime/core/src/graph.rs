//! The task DAG: petgraph underneath, task indices on top.
//!
//! Nodes are task indices (positions in the workflow's task list); an edge
//! `a -> b` means `b` needs `a`. This module finds cycles (naming every task on
//! one), orders tasks, and draws the graph as Graphviz dot or Mermaid. It knows
//! nothing of plugins, expressions or I/O.

use std::collections::VecDeque;
use std::fmt::Write as _;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Dependencies between tasks, known to be acyclic once built.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<(), ()>,
    order: Vec<usize>,
}

/// How a node is labelled when drawn.
#[derive(Debug, Clone)]
pub struct NodeLabel<'a> {
    /// The task id.
    pub id: &'a str,
    /// The plugin it uses.
    pub uses: &'a str,
    /// Whether it runs only under a `when:` condition.
    pub conditional: bool,
}

/// Drawing formats for [`Dag::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

impl Dag {
    /// Builds the DAG of `count` tasks where `needs[i]` lists what task `i`
    /// waits for. On a cycle, returns the tasks along one, in order, starting
    /// and ending with the same task.
    pub fn build(count: usize, needs: &[Vec<usize>]) -> Result<Self, Vec<usize>> {
        let mut graph = DiGraph::with_capacity(count, needs.iter().map(Vec::len).sum());
        for _ in 0..count {
            graph.add_node(());
        }
        for (task, deps) in needs.iter().enumerate() {
            for &dep in deps {
                graph.add_edge(NodeIndex::new(dep), NodeIndex::new(task), ());
            }
        }
        // tarjan_scc yields components in reverse topological order, so one
        // pass both detects cycles and orders the tasks.
        let mut order = Vec::with_capacity(count);
        for component in tarjan_scc(&graph) {
            let node = component[0];
            if component.len() > 1 || graph.contains_edge(node, node) {
                return Err(cycle_through(&graph, &component));
            }
            order.push(node.index());
        }
        order.reverse();
        Ok(Self { graph, order })
    }

    /// Task indices, each after everything it needs.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Tasks that need `task` directly.
    pub fn dependents(&self, task: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(task), petgraph::Direction::Outgoing)
            .map(NodeIndex::index)
    }

    /// Whether `ancestor` must finish before `task` starts (directly or not).
    pub fn precedes(&self, ancestor: usize, task: usize) -> bool {
        let target = NodeIndex::new(ancestor);
        let mut seen = vec![false; self.graph.node_count()];
        let mut stack = vec![NodeIndex::new(task)];
        while let Some(node) = stack.pop() {
            for dep in self
                .graph
                .neighbors_directed(node, petgraph::Direction::Incoming)
            {
                if dep == target {
                    return true;
                }
                if !std::mem::replace(&mut seen[dep.index()], true) {
                    stack.push(dep);
                }
            }
        }
        false
    }

    /// Draws the graph; `labels[i]` describes task `i`.
    pub fn render(&self, name: &str, labels: &[NodeLabel<'_>], format: Format) -> String {
        let mut out = String::new();
        let edges = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e));
        // Writing to a String cannot fail.
        match format {
            Format::Dot => {
                let _ = writeln!(
                    out,
                    "digraph {name:?} {{\n  rankdir=LR;\n  node [shape=box];"
                );
                for label in labels {
                    let style = if label.conditional {
                        ", style=dashed"
                    } else {
                        ""
                    };
                    let text = format!("{}\n{}", label.id, label.uses);
                    let _ = writeln!(out, "  {:?} [label={text:?}{style}];", label.id);
                }
                for (from, to) in edges {
                    let (from, to) = (labels[from.index()].id, labels[to.index()].id);
                    let _ = writeln!(out, "  {from:?} -> {to:?};");
                }
                out.push_str("}\n");
            }
            Format::Mermaid => {
                let _ = writeln!(out, "---\ntitle: {name}\n---\nflowchart LR");
                for (i, label) in labels.iter().enumerate() {
                    let (open, close) = if label.conditional {
                        ("{{", "}}")
                    } else {
                        ("[", "]")
                    };
                    let text = format!("{}<br/>{}", label.id, label.uses).replace('"', "#quot;");
                    let _ = writeln!(out, "  t{i}{open}\"{text}\"{close}");
                }
                for (from, to) in edges {
                    let _ = writeln!(out, "  t{} --> t{}", from.index(), to.index());
                }
            }
        }
        out
    }
}

/// A cycle inside one strongly connected component, as task indices in
/// dependency order (`a`, then a task `a` needs, ..., then `a` again).
fn cycle_through(graph: &DiGraph<(), ()>, component: &[NodeIndex]) -> Vec<usize> {
    let start = *component.iter().min().expect("components are never empty");
    let in_component = |n: &NodeIndex| component.contains(n);
    // Breadth-first search along "needs" edges (incoming) back to `start`.
    let mut came_from = vec![None; graph.node_count()];
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for dep in graph.neighbors_directed(node, petgraph::Direction::Incoming) {
            if !in_component(&dep) {
                continue;
            }
            if dep == start {
                let mut chain = Vec::new();
                let mut at = node;
                while at != start {
                    chain.push(at.index());
                    at = came_from[at.index()].expect("every visited node has a parent");
                }
                chain.reverse();
                let mut cycle = vec![start.index()];
                cycle.extend(chain);
                cycle.push(start.index());
                return cycle;
            }
            if came_from[dep.index()].is_none() && dep != start {
                came_from[dep.index()] = Some(node);
                queue.push_back(dep);
            }
        }
    }
    vec![start.index(), start.index()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first() {
        let dag = Dag::build(3, &[vec![2], vec![0], vec![]]).unwrap();
        assert_eq!(dag.topological_order(), [2, 0, 1]);
        assert!(dag.precedes(2, 1));
        assert!(!dag.precedes(1, 2));
    }

    #[test]
    fn names_a_cycle() {
        // 0 needs 2, 2 needs 1, 1 needs 0; 3 is outside the cycle.
        let cycle = Dag::build(4, &[vec![2], vec![0], vec![1], vec![0]]).unwrap_err();
        assert_eq!(cycle, [0, 2, 1, 0]);
    }

    #[test]
    fn names_a_self_loop() {
        let cycle = Dag::build(2, &[vec![], vec![1]]).unwrap_err();
        assert_eq!(cycle, [1, 1]);
    }
}
