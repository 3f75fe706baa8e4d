//! Activation predictors (issue 4). Depends on nothing of the engine.
