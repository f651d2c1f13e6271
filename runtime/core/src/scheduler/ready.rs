//! The ready queue: tasks whose needs have all finished, highest `priority`
//! first, and among equal priorities the one that became ready first.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Ready tasks by (priority, order of arrival).
#[derive(Debug, Default)]
pub(super) struct ReadyQueue {
    heap: BinaryHeap<(i32, Reverse<u64>, usize)>,
    arrivals: u64,
}

impl ReadyQueue {
    /// Task `task` is ready, with `priority`.
    pub fn push(&mut self, task: usize, priority: i32) {
        self.heap.push((priority, Reverse(self.arrivals), task));
        self.arrivals += 1;
    }

    /// The next task to start.
    pub fn pop(&mut self) -> Option<usize> {
        self.heap.pop().map(|(_, _, task)| task)
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_first_come() {
        let mut q = ReadyQueue::default();
        for (task, priority) in [(0, 0), (1, 5), (2, 0), (3, 5), (4, -1)] {
            q.push(task, priority);
        }
        let order: Vec<usize> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [1, 3, 0, 2, 4]);
    }
}
