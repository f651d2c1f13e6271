//! When what a task does may be seen outside: under strict durability a
//! task starts as soon as its needs have finished, but its effects wait for
//! the commit that made those needs' states durable.
//!
//! The run numbers every state it hands to the journal and keeps a
//! [`Watermark`]: how far the states are on disk. A task's [`Effects`] is
//! the number of its needs' last state; whatever can be seen from outside
//! waits on it: outgoing HTTP, emitted text, a child workflow's start, the
//! opening of a writable directory, a wait's start, its own items and
//! retries being recorded. So a crash before that commit loses only work
//! nobody saw, which runs again; and nothing is ever sent on inputs that
//! were later lost. Work that shows nothing (most tasks) never waits.
//!
//! Under batched durability effects go out at once, but what the task
//! records for good (its items, its retries) still comes after its needs'
//! states, so a resumed run never keeps items made from inputs it lost.

use tokio::sync::watch;

/// How far a run's states are durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Durable {
    /// Every state numbered up to this one is on disk.
    upto: u64,
    /// A commit failed: nothing later will be released.
    failed: bool,
}

impl Durable {
    fn covers(self, needs: u64) -> bool {
        !self.failed && self.upto >= needs
    }
}

/// The run's side: moved on as commits return.
#[derive(Debug)]
pub(super) struct Watermark {
    durable: watch::Sender<Durable>,
}

impl Watermark {
    pub fn new() -> Self {
        Self {
            durable: watch::Sender::new(Durable::default()),
        }
    }

    /// Every state numbered up to `upto` is on disk.
    pub fn committed(&self, upto: u64) {
        self.durable.send_if_modified(|d| {
            let moved = upto > d.upto;
            d.upto = d.upto.max(upto);
            moved
        });
    }

    /// A commit failed: held effects are never released.
    pub fn failed(&self) {
        self.durable.send_modify(|d| d.failed = true);
    }

    /// The effects of a task whose needs' last state is numbered `needs`:
    /// held until it is durable when `strict`, let out at once otherwise;
    /// its records come after it either way.
    pub fn effects(&self, needs: u64, strict: bool) -> Effects {
        if self.durable.borrow().covers(needs) {
            return Effects::released();
        }
        let after = Some((self.durable.subscribe(), needs));
        Effects {
            hold: if strict { after.clone() } else { None },
            after,
        }
    }
}

/// When a task's effects may happen: at once, or once its needs' states
/// are durable; and when it may record something for good.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// What outside effects wait for.
    hold: Option<Mark>,
    /// What the task's own records wait for.
    after: Option<Mark>,
}

/// A run's durable watermark, and the state number awaited on it.
type Mark = (watch::Receiver<Durable>, u64);

impl Effects {
    /// Effects that wait for nothing (batched durability, no journal, work
    /// outside a run).
    pub fn released() -> Self {
        Self::default()
    }

    /// Whether they may happen now.
    pub fn is_released(&self) -> bool {
        reached(self.hold.as_ref())
    }

    /// Resolves once they may happen; an error when they never will (the
    /// commit of the task's inputs failed, or the run ended).
    pub async fn wait(&self) -> Result<(), String> {
        until(self.hold.as_ref()).await
    }

    /// Whether the task may record something for good now.
    pub fn may_record(&self) -> bool {
        reached(self.after.as_ref())
    }

    /// Resolves once the task may record something for good (its items, a
    /// retry): after its needs' states, under either durability.
    pub async fn recorded_needs(&self) -> Result<(), String> {
        until(self.after.as_ref()).await
    }
}

fn reached(mark: Option<&Mark>) -> bool {
    mark.is_none_or(|(durable, needs)| durable.borrow().covers(*needs))
}

async fn until(mark: Option<&Mark>) -> Result<(), String> {
    let Some((durable, needs)) = mark else {
        return Ok(());
    };
    let mut durable = durable.clone();
    match durable.wait_for(|d| d.failed || d.upto >= *needs).await {
        Ok(d) if !d.failed => Ok(()),
        _ => Err(
            "the task's inputs could not be made durable (recording the run failed), \
             so nothing it does is let out"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn effects_wait_for_their_needs_commit() {
        let mark = Watermark::new();
        assert!(mark.effects(0, true).is_released());
        let effects = mark.effects(3, true);
        assert!(!effects.is_released());
        mark.committed(2);
        assert!(!effects.is_released());
        let waiting = tokio::spawn({
            let effects = effects.clone();
            async move { effects.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        mark.committed(5);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert!(effects.is_released());
        assert!(mark.effects(4, true).is_released());
    }

    #[tokio::test]
    async fn batched_effects_go_out_but_records_wait() {
        let mark = Watermark::new();
        let effects = mark.effects(2, false);
        assert!(effects.is_released());
        assert_eq!(effects.wait().await, Ok(()));
        assert!(!effects.may_record());
        mark.committed(2);
        assert!(effects.may_record());
        assert_eq!(effects.recorded_needs().await, Ok(()));
    }

    #[tokio::test]
    async fn a_failed_commit_never_releases() {
        let mark = Watermark::new();
        let effects = mark.effects(1, true);
        mark.failed();
        mark.committed(9);
        assert!(!effects.is_released());
        let error = effects.wait().await.unwrap_err();
        assert!(error.contains("could not be made durable"), "{error}");
        drop(mark);
        let orphan = Watermark::new().effects(1, true);
        assert!(
            orphan.wait().await.is_err(),
            "a run that ended releases nothing"
        );
    }
}
