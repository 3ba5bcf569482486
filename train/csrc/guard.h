// The shim's one error channel and the guard every exported function runs its body in
// (shim.cpp and dist.cpp share both): an exported function returns 0, or 1 with the
// exception's message kept for h5gpt_last_error() on this thread.
#pragma once
#include <c10/util/Exception.h>
#include <exception>
#include <string>

// The message of the last failure on this thread (one instance across the shim's files).
inline thread_local std::string h5gpt_last_error_message;

// Runs `f`: 0 when it returns, 1 when it throws, with the message in the error channel.
template <typename F> int h5gpt_guard(F &&f) {
  try {
    f();
    return 0;
  } catch (const c10::Error &e) {
    // The message without the C++ stack trace c10 appends.
    h5gpt_last_error_message = e.what_without_backtrace();
    return 1;
  } catch (const std::exception &e) {
    h5gpt_last_error_message = e.what();
    return 1;
  } catch (...) {
    h5gpt_last_error_message = "unknown C++ exception";
    return 1;
  }
}
