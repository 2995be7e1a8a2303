package dev.guardwire.client;

/** The three-valued outcome of a check. UNAVAILABLE is never "safe" by itself. */
public enum Outcome {
  /** The guard model judged the turn safe. */
  SAFE,
  /** The guard model judged the turn unsafe. */
  UNSAFE,
  /** No verdict: guard down, overloaded, timed out, or rejected the request. */
  UNAVAILABLE
}
