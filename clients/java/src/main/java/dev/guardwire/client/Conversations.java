package dev.guardwire.client;

import dev.guardwire.v1.Conversation;
import dev.guardwire.v1.Role;
import dev.guardwire.v1.Turn;
import java.util.Arrays;

/** Builders of conversations: {@code Conversations.of(user("hi"), assistant("hello"))}. */
public final class Conversations {
  private Conversations() {}

  public static Turn user(String text) {
    return Turn.newBuilder().setRole(Role.ROLE_USER).setContent(text).build();
  }

  public static Turn assistant(String text) {
    return Turn.newBuilder().setRole(Role.ROLE_ASSISTANT).setContent(text).build();
  }

  /** A conversation of the given turns, oldest first. */
  public static Conversation of(Turn... turns) {
    return Conversation.newBuilder().addAllTurns(Arrays.asList(turns)).build();
  }

  /** A conversation of one user turn. */
  public static Conversation of(String userText) {
    return of(user(userText));
  }
}
