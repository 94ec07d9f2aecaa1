//! workflow core (in progress)
