//! Jobs: long work a tenant starts through the API and follows by id — model training (with scheduled
//! retraining) and strategy optimisation. Each kind is one supervised actor that queues, runs (on the
//! blocking pool, never on an actor thread), reports progress and keeps the results; they call the same use
//! cases as the API when a result changes what trades (e.g. a retrained model taking an alias).

pub mod optimisations;
pub mod training;
