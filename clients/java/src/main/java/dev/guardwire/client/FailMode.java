package dev.guardwire.client;

/** The caller's explicit choice for {@link Outcome#UNAVAILABLE}. */
public enum FailMode {
  /** Block when there is no verdict. */
  CLOSED,
  /** Let the content through when there is no verdict. */
  OPEN
}
