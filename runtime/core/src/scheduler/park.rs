//! Parking: a run whose only unfinished tasks are `wait:`s, all started
//! (their deadlines recorded) and nothing else to commit, can stop and
//! let go of everything it holds; its caller keeps only what wakes it (a
//! signal, or the earliest deadline) and resumes it from its journal then.
//! A waiting run costs a process nothing but that, so it can keep many
//! thousands of them.

use std::collections::HashMap;
use std::time::Duration;

use super::RunReport;

/// How a run that may park came back.
#[derive(Debug)]
pub enum Ran {
    /// It ran to its end (or was cancelled, or timed out).
    Finished(RunReport),
    /// Only started waits were left, for the whole of the run's
    /// `park_after`: it stopped, everything it did durable.
    Parked(Parked),
}

/// What a parked run waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// Its waits, in task order.
    pub waits: Vec<ParkedWait>,
    /// When it must be resumed even if no signal comes, ms since the
    /// epoch: the earliest wait deadline or the workflow's timeout.
    pub wake_at: Option<u64>,
}

/// One wait of a parked run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedWait {
    /// The `wait:` task.
    pub task: String,
    /// The signal it waits for.
    pub signal: String,
    /// Its recorded deadline, ms since the epoch.
    pub deadline: Option<u64>,
}

/// Which running tasks are waits that have recorded their deadlines, and
/// since when nothing but those runs.
#[derive(Debug, Default)]
pub(super) struct Parking {
    /// Started waits, by task index: their deadlines.
    started: HashMap<usize, Option<u64>>,
    /// Since when only started waits run and nothing waits to be
    /// committed.
    quiet_since: Option<tokio::time::Instant>,
}

impl Parking {
    /// Task `i`'s wait recorded its `deadline` and now waits for its signal.
    pub fn started(&mut self, i: usize, deadline: Option<u64>) {
        self.started.insert(i, deadline);
    }

    /// Task `i` is no longer running.
    pub fn ended(&mut self, i: usize) {
        self.started.remove(&i);
    }

    /// Notes whether the run could park now (`running` tasks run, all
    /// idle otherwise) and returns when it parks if nothing changes.
    pub fn due(
        &mut self,
        running: usize,
        idle: bool,
        after: Duration,
    ) -> Option<tokio::time::Instant> {
        if idle && running > 0 && self.started.len() == running {
            Some(
                *self
                    .quiet_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    + after,
            )
        } else {
            self.quiet_since = None;
            None
        }
    }

    /// What the run waits for, parked: its waits, and the earliest of
    /// their deadlines and `timeout_at` (the workflow's).
    pub fn parked(
        &self,
        ids: impl Fn(usize) -> (String, String),
        timeout_at: Option<u64>,
    ) -> Parked {
        let mut tasks: Vec<_> = self.started.iter().collect();
        tasks.sort_by_key(|(i, _)| **i);
        let waits: Vec<ParkedWait> = tasks
            .into_iter()
            .map(|(&i, &deadline)| {
                let (task, signal) = ids(i);
                ParkedWait {
                    task,
                    signal,
                    deadline,
                }
            })
            .collect();
        let wake_at = waits
            .iter()
            .filter_map(|w| w.deadline)
            .chain(timeout_at)
            .min();
        Parked { waits, wake_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parks_only_when_every_running_task_is_a_started_wait() {
        let after = Duration::from_millis(100);
        let mut parking = Parking::default();
        assert_eq!(
            parking.due(0, true, after),
            None,
            "nothing runs: it ends instead"
        );
        parking.started(2, Some(50));
        assert_eq!(parking.due(2, true, after), None, "another task still runs");
        let first = parking.due(1, true, after).expect("one started wait runs");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            parking.due(1, true, after),
            Some(first),
            "quiet since the first look"
        );
        assert_eq!(parking.due(1, false, after), None, "a commit is due");
        assert!(
            parking.due(1, true, after).unwrap() > first,
            "quiet again from now"
        );
        parking.ended(2);
        assert_eq!(parking.due(1, true, after), None);
    }

    #[test]
    fn wakes_at_the_earliest_deadline_or_the_timeout() {
        let mut parking = Parking::default();
        parking.started(3, Some(900));
        parking.started(1, None);
        parking.started(2, Some(700));
        let ids = |i: usize| (format!("t{i}"), format!("s{i}"));
        let parked = parking.parked(ids, Some(800));
        assert_eq!(parked.wake_at, Some(700));
        assert_eq!(
            parked
                .waits
                .iter()
                .map(|w| w.task.as_str())
                .collect::<Vec<_>>(),
            ["t1", "t2", "t3"]
        );
        assert_eq!(parking.parked(ids, Some(500)).wake_at, Some(500));
        let mut open = Parking::default();
        open.started(0, None);
        assert_eq!(
            open.parked(ids, None).wake_at,
            None,
            "nothing but a signal wakes it"
        );
    }
}
