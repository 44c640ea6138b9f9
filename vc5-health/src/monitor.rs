//! Running many checks continuously, and telling the caller when their states change.
//!
//! # Design
//!
//! One task, the *owner*, holds all the state: which checks run, their hysteresis,
//! last outcomes and subscribers. Every running check is a small task of its own in
//! the owner's [`JoinSet`], looping "wait for the next tick, run once, send the
//! outcome to the owner". The owner is fed by two channels: commands from the
//! [`Monitor`] handles, and outcomes from the check tasks. Nothing is shared or
//! locked, so a slow caller or a slow check never holds up anyone else, and a check
//! that is removed is simply aborted (an outcome still in flight from it is
//! recognised by its slot number, which is never reused, and dropped).
//!
//! A task per check rather than one timer wheel in the owner keeps each check's
//! I/O and its timeout independent: 1,000 checks against hanging servers are 1,000
//! sleeping tasks, a few hundred bytes each.
//!
//! # Identity and deduplication
//!
//! The caller names each check with an id of its choice (`K`, e.g. service, real and
//! check name) and gives its [`CheckSpec`]. Checks are run per *spec*: ids whose
//! specs are equal (same kind, target, parameters, timing and source) share one
//! running check, so two services that probe the same real the same way cost one
//! probe. Transitions are still delivered per id. A caller without ids of its own
//! can key checks by their spec alone, with `Monitor<CheckSpec>`.
//!
//! [`Monitor::set_checks`] replaces the whole set, as a configuration reload does:
//! specs no longer wanted are stopped, specs still wanted keep running with their
//! state and counters untouched, new ones are started. An id whose spec changed
//! only in its timing (interval, timeout, rise, fall) gets a new check, which
//! starts in the state the id had rather than `Unknown`, so that retuning a check
//! does not withdraw a VIP while the new one takes its first measurement;
//! hysteresis then applies as usual. An id whose probe changed (target, kind or
//! source: [`CheckSpec::same_probe`]) starts `Unknown` and its first result
//! decides, since the old check's state says nothing about the new one.
//!
//! # Timing
//!
//! A new check first runs after a random delay within its interval, so that the
//! 1,000 checks of a freshly loaded configuration are spread evenly over their
//! interval instead of firing in the same millisecond; after that it runs every
//! interval (start to start). A run that overruns its interval delays the next one
//! rather than bunching runs up. The first result decides the state directly (see
//! [`crate::hysteresis`]), so a restart costs one interval at most.
//!
//! # Delivery
//!
//! [`Event`]s go to the caller through one unbounded channel, in the order the
//! owner produced them: a [`Transition`] whenever an id's state changes (after a
//! run, or because [`Monitor::set_checks`] attached the id to a check in another
//! state), and a [`Snapshot`](Event::Snapshot) of every id when asked with
//! [`Monitor::request_snapshot`]. Because both travel in one channel, applying
//! events in order to a snapshot always gives the current state. The channel is
//! unbounded so that the owner never waits for the caller; what it carries is
//! bounded by hysteresis (at most one transition per id per interval) and by the
//! caller's own requests.
//!
//! Runs that change nothing send nothing. Their outcomes (time, latency,
//! reason) are kept in a [`Latest`] cell per check, which every transition
//! and snapshot hands out, for a caller that shows "last checked" without
//! an event per run.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, Span, debug, error, info, info_span};

use crate::hysteresis::{CheckState, CheckTracker};
use crate::outcome::Outcome;
use crate::probe::Prober;
use crate::spec::{CheckSpec, SpecError};

/// Outcomes waiting for the owner. Check tasks wait when it is full, which only
/// delays their next tick; 1,024 is far more than arrive between two wake-ups.
const RESULT_QUEUE: usize = 1024;

/// A handle to a running monitor. Clones share it; the monitor stops when
/// [`Monitor::shutdown`] is called or the last handle is dropped.
#[derive(Debug)]
pub struct Monitor<K> {
    commands: mpsc::UnboundedSender<Command<K>>,
}

impl<K> Clone for Monitor<K> {
    fn clone(&self) -> Self {
        Monitor {
            commands: self.commands.clone(),
        }
    }
}

/// Something the monitor tells its caller.
#[derive(Debug, Clone)]
pub enum Event<K> {
    /// An id's check changed state.
    Transition(Transition<K>),
    /// The state of every id, as asked by [`Monitor::request_snapshot`].
    Snapshot(Vec<CheckStatus<K>>),
}

/// A change of state of one id's check.
#[derive(Debug, Clone)]
pub struct Transition<K> {
    /// The caller's id.
    pub id: K,
    /// The check.
    pub spec: Arc<CheckSpec>,
    /// The state before.
    pub from: CheckState,
    /// The state now.
    pub to: CheckState,
    /// The outcome of the check's latest run, which carries the reason of a failure;
    /// `None` if the check has not run yet (its state was carried over from the
    /// check the id had before a reload).
    pub outcome: Option<Outcome>,
    /// The check's latest run, kept current by the monitor.
    pub latest: Arc<Latest>,
}

impl<K> Transition<K> {
    /// Why the check fails, if the latest run failed.
    pub fn reason(&self) -> Option<String> {
        self.outcome
            .as_ref()
            .and_then(Outcome::failure)
            .map(ToString::to_string)
    }
}

/// The state of one id's check.
#[derive(Debug, Clone)]
pub struct CheckStatus<K> {
    /// The caller's id.
    pub id: K,
    /// The check.
    pub spec: Arc<CheckSpec>,
    /// Its state.
    pub state: CheckState,
    /// The outcome of its latest run: pass or fail, reason, latency, time.
    pub last: Option<Outcome>,
    /// The outcome of its latest failed run, even if later runs passed.
    pub last_failure: Option<Outcome>,
    /// When its state last changed, on tokio's clock and on the wall clock.
    pub changed: Option<(Instant, SystemTime)>,
    /// Runs so far.
    pub runs: u64,
    /// Runs so far that passed.
    pub passes: u64,
    /// The check's latest run, kept current by the monitor (`last` is a copy
    /// as of this status).
    pub latest: Arc<Latest>,
}

/// The outcome of the latest run of one running check, updated by the monitor
/// after every run. Transitions are rare and say nothing about the runs between
/// them, so a caller that shows "last checked" times and latencies keeps the
/// [`Arc`] each [`Transition`] and [`CheckStatus`] carries and reads it when it
/// needs to: no event per run, and one small lock per check read.
///
/// Ids that share a check share its cell. A check that is stopped (its spec no
/// longer wanted) keeps its last value; the new check's cell arrives with the
/// transitions and the snapshot that follow [`Monitor::set_checks`].
#[derive(Debug, Default)]
pub struct Latest(Mutex<Option<Outcome>>);

impl Latest {
    /// The latest run's outcome, `None` before the first run.
    pub fn get(&self) -> Option<Outcome> {
        self.lock().clone()
    }

    fn set(&self, outcome: Outcome) {
        *self.lock() = Some(outcome);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outcome>> {
        // A panic while holding this lock cannot leave an Option half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Monitor::set_checks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Checks started (new specs).
    pub started: usize,
    /// Checks left running (specs wanted before and now).
    pub kept: usize,
    /// Checks stopped (specs no longer wanted).
    pub stopped: usize,
    /// Ids now monitored; more than the running checks when ids share a spec.
    pub ids: usize,
}

/// Why the monitor could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorError {
    /// A check cannot run as specified; nothing was changed.
    #[error("check `{check}`: {error}")]
    Invalid {
        /// The check, as displayed.
        check: String,
        /// What is wrong with it.
        error: SpecError,
    },
    /// The monitor has been shut down.
    #[error("the health monitor has stopped")]
    Stopped,
}

enum Command<K> {
    Set {
        checks: Vec<(K, CheckSpec)>,
        reply: oneshot::Sender<Result<Applied, MonitorError>>,
    },
    Status {
        reply: oneshot::Sender<Vec<CheckStatus<K>>>,
    },
    Snapshot,
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl<K> std::fmt::Debug for Command<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Set { .. } => "Set",
            Command::Status { .. } => "Status",
            Command::Snapshot => "Snapshot",
            Command::Shutdown { .. } => "Shutdown",
        })
    }
}

impl<K> Monitor<K>
where
    K: Clone + Eq + Hash + Send + 'static,
{
    /// Starts a monitor with no checks on the current tokio runtime; returns its
    /// handle and the receiver of its events.
    pub fn start() -> (Monitor<K>, mpsc::UnboundedReceiver<Event<K>>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let (results, result_rx) = mpsc::channel(RESULT_QUEUE);
        let owner = Owner {
            slots: HashMap::new(),
            by_spec: HashMap::new(),
            by_id: HashMap::new(),
            next_slot: 0,
            tasks: JoinSet::new(),
            results,
            events,
        };
        tokio::spawn(owner.run(command_rx, result_rx));
        (Monitor { commands }, event_rx)
    }

    /// Replaces the set of checks with `checks`. If an id appears twice, the last
    /// spec given for it counts. If any new spec is invalid, nothing changes.
    pub async fn set_checks(
        &self,
        checks: impl IntoIterator<Item = (K, CheckSpec)>,
    ) -> Result<Applied, MonitorError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Set {
            checks: checks.into_iter().collect(),
            reply,
        })?;
        answer.await.map_err(|_| MonitorError::Stopped)?
    }

    /// The state of every id now, in no particular order. For a consistent view
    /// together with the event stream, use [`Monitor::request_snapshot`].
    pub async fn status(&self) -> Result<Vec<CheckStatus<K>>, MonitorError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Status { reply })?;
        answer.await.map_err(|_| MonitorError::Stopped)
    }

    /// Asks for an [`Event::Snapshot`] of every id in the event stream.
    pub fn request_snapshot(&self) -> Result<(), MonitorError> {
        self.send(Command::Snapshot)
    }

    /// Stops every check and the monitor, and waits until they have stopped.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).is_ok() {
            // An error means the owner is gone already, which is the goal.
            let _ = done.await;
        }
    }

    fn send(&self, command: Command<K>) -> Result<(), MonitorError> {
        self.commands
            .send(command)
            .map_err(|_| MonitorError::Stopped)
    }
}

/// One running check and the ids that share it.
struct Slot<K> {
    prober: Prober,
    ids: Vec<K>,
    tracker: CheckTracker,
    latest: Arc<Latest>,
    task: AbortHandle,
    span: Span,
}

struct Owner<K> {
    slots: HashMap<u64, Slot<K>>,
    by_spec: HashMap<Arc<CheckSpec>, u64>,
    by_id: HashMap<K, u64>,
    /// Slot numbers are never reused, so an outcome from a stopped check cannot be
    /// mistaken for one of its successor's.
    next_slot: u64,
    tasks: JoinSet<u64>,
    results: mpsc::Sender<(u64, Outcome)>,
    events: mpsc::UnboundedSender<Event<K>>,
}

impl<K> Owner<K>
where
    K: Clone + Eq + Hash + Send + 'static,
{
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command<K>>,
        mut results: mpsc::Receiver<(u64, Outcome)>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Set { checks, reply }) => {
                        // The caller may have given up waiting; the change stands.
                        let _ = reply.send(self.set(checks));
                    }
                    Some(Command::Status { reply }) => {
                        let _ = reply.send(self.snapshot());
                    }
                    Some(Command::Snapshot) => self.emit(Event::Snapshot(self.snapshot())),
                    Some(Command::Shutdown { reply }) => {
                        self.tasks.shutdown().await;
                        let _ = reply.send(());
                        break;
                    }
                    None => break,
                },
                Some((slot, outcome)) = results.recv() => self.record(slot, outcome),
                Some(joined) = self.tasks.join_next() => self.reap(joined),
            }
        }
        // Dropping the JoinSet aborts any check still running.
    }

    fn set(&mut self, checks: Vec<(K, CheckSpec)>) -> Result<Applied, MonitorError> {
        // The wanted ids, the last spec of each, grouped by spec. Specs already
        // running keep their Arc, so every id of a spec shares one allocation.
        let mut wanted: HashMap<K, Arc<CheckSpec>> = HashMap::with_capacity(checks.len());
        for (id, spec) in checks {
            let spec = match self.by_spec.get_key_value(&spec) {
                Some((running, _)) => running.clone(),
                None => Arc::new(spec),
            };
            wanted.insert(id, spec);
        }
        let mut groups: HashMap<Arc<CheckSpec>, Vec<K>> = HashMap::new();
        for (id, spec) in &wanted {
            groups.entry(spec.clone()).or_default().push(id.clone());
        }

        // Validate every new spec before changing anything, so that a bad reload
        // leaves the running set as it was.
        let mut new = Vec::new();
        for (spec, ids) in &mut groups {
            if !self.by_spec.contains_key(spec) {
                let prober = Prober::new(spec.clone()).map_err(|error| MonitorError::Invalid {
                    check: spec.to_string(),
                    error,
                })?;
                new.push((prober, std::mem::take(ids)));
            }
        }

        let before: HashMap<K, (CheckState, Arc<CheckSpec>)> = self
            .by_id
            .iter()
            .filter_map(|(id, slot)| {
                let slot = self.slots.get(slot)?;
                Some((
                    id.clone(),
                    (slot.tracker.state(), slot.prober.spec().clone()),
                ))
            })
            .collect();

        let unwanted: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, slot)| !groups.contains_key(slot.prober.spec()))
            .map(|(&n, _)| n)
            .collect();
        for n in &unwanted {
            if let Some(slot) = self.slots.remove(n) {
                slot.task.abort();
                self.by_spec.remove(slot.prober.spec());
                slot.span.in_scope(|| debug!("check stopped"));
            }
        }

        let (started, kept, stopped) = (new.len(), self.slots.len(), unwanted.len());
        for (spec, ids) in groups {
            if let Some(slot) = self.by_spec.get(&spec).and_then(|n| self.slots.get_mut(n)) {
                slot.ids = ids;
            }
        }
        for (prober, ids) in new {
            // Carry the ids' common state over to their new check where only
            // its timing changed; if they disagree, or one is new or probes
            // otherwise than it did, the first result decides.
            let spec = prober.spec().clone();
            let mut states = ids.iter().map(|id| {
                before
                    .get(id)
                    .filter(|(_, was)| was.same_probe(&spec))
                    .map(|&(state, _)| state)
            });
            let first = states.next().flatten();
            let initial = match first {
                Some(state) if states.all(|s| s == Some(state)) => state,
                _ => CheckState::Unknown,
            };
            self.start(prober, ids, initial);
        }

        self.by_id = self
            .slots
            .iter()
            .flat_map(|(&n, slot)| slot.ids.iter().map(move |id| (id.clone(), n)))
            .collect();

        // Tell the caller about every id whose state is now different: new ids
        // attached to a check that already has a result, and ids moved between
        // checks in different states.
        for (id, &n) in &self.by_id {
            let Some(slot) = self.slots.get(&n) else {
                continue;
            };
            let from = before
                .get(id)
                .map_or(CheckState::Unknown, |&(state, _)| state);
            let to = slot.tracker.state();
            if from != to {
                self.emit(Event::Transition(Transition {
                    id: id.clone(),
                    spec: slot.prober.spec().clone(),
                    from,
                    to,
                    outcome: slot.tracker.last().cloned(),
                    latest: slot.latest.clone(),
                }));
            }
        }
        Ok(Applied {
            started,
            kept,
            stopped,
            ids: self.by_id.len(),
        })
    }

    fn start(&mut self, prober: Prober, ids: Vec<K>, initial: CheckState) {
        let n = self.next_slot;
        self.next_slot += 1;
        let spec = prober.spec().clone();
        let span = info_span!("check", target = %spec.target, kind = spec.kind.name(), slot = n);
        let first = Instant::now() + jitter(spec.interval);
        let task = self.spawn(n, prober.clone(), first, span.clone());
        span.in_scope(|| debug!(check = %spec, ?initial, "check started"));
        self.by_spec.insert(spec.clone(), n);
        self.slots.insert(
            n,
            Slot {
                tracker: CheckTracker::new(spec.rise, spec.fall, initial),
                latest: Arc::default(),
                prober,
                ids,
                task,
                span,
            },
        );
    }

    fn spawn(&mut self, n: u64, prober: Prober, first: Instant, span: Span) -> AbortHandle {
        let results = self.results.clone();
        let run = async move {
            let mut ticks = tokio::time::interval_at(first, prober.spec().interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let outcome = prober.run().await;
                debug!(%outcome, "ran");
                if results.send((n, outcome)).await.is_err() {
                    break;
                }
            }
            n
        };
        self.tasks.spawn(run.instrument(span))
    }

    fn record(&mut self, n: u64, outcome: Outcome) {
        // An outcome from a check stopped since it was sent has no slot: dropped.
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        slot.latest.set(outcome.clone());
        let Some(change) = slot.tracker.record(outcome) else {
            return;
        };
        let last = slot.tracker.last().cloned();
        let reason = last
            .as_ref()
            .and_then(Outcome::failure)
            .map(ToString::to_string);
        slot.span.in_scope(|| {
            info!(
                from = %change.from,
                to = %change.to,
                reason = reason.as_deref().unwrap_or(""),
                "check state changed"
            );
        });
        for id in &slot.ids {
            let event = Event::Transition(Transition {
                id: id.clone(),
                spec: slot.prober.spec().clone(),
                from: change.from,
                to: change.to,
                outcome: last.clone(),
                latest: slot.latest.clone(),
            });
            // A caller that dropped its receiver only wants status(); not an error.
            let _ = self.events.send(event);
        }
    }

    /// Handles the end of a check task: only a panic ends one while its slot
    /// exists, and the check is then restarted so it does not silently freeze.
    fn reap(&mut self, joined: Result<u64, tokio::task::JoinError>) {
        let Err(error) = joined else {
            return;
        };
        if !error.is_panic() {
            return; // aborted on purpose
        }
        let found = self
            .slots
            .iter()
            .find(|(_, slot)| slot.task.id() == error.id())
            .map(|(&n, slot)| (n, slot.prober.clone(), slot.span.clone()));
        if let Some((n, prober, span)) = found {
            span.in_scope(|| error!("check task panicked; restarting it"));
            let interval = prober.spec().interval;
            let task = self.spawn(n, prober, Instant::now() + interval, span);
            if let Some(slot) = self.slots.get_mut(&n) {
                slot.task = task;
            }
        }
    }

    fn snapshot(&self) -> Vec<CheckStatus<K>> {
        self.by_id
            .iter()
            .filter_map(|(id, n)| {
                let slot = self.slots.get(n)?;
                Some(CheckStatus {
                    id: id.clone(),
                    spec: slot.prober.spec().clone(),
                    state: slot.tracker.state(),
                    last: slot.tracker.last().cloned(),
                    last_failure: slot.tracker.last_failure().cloned(),
                    changed: slot.tracker.changed(),
                    runs: slot.tracker.runs(),
                    passes: slot.tracker.passes(),
                    latest: slot.latest.clone(),
                })
            })
            .collect()
    }

    fn emit(&self, event: Event<K>) {
        // A caller that dropped its receiver only wants status(); not an error.
        let _ = self.events.send(event);
    }
}

/// A random delay in `[0, interval)`.
fn jitter(interval: Duration) -> Duration {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(crate::random_u64() % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_interval_and_spreads() {
        let interval = Duration::from_secs(2);
        let delays: Vec<_> = (0..1000).map(|_| jitter(interval)).collect();
        assert!(delays.iter().all(|d| *d < interval));
        // 1,000 draws over 2 s: every quarter of the interval gets some.
        for quarter in 0..4u32 {
            let lo = interval * quarter / 4;
            let hi = interval * (quarter + 1) / 4;
            let n = delays.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!(n > 150, "quarter {quarter} got {n}");
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
