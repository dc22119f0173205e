// Error hierarchy (ARCHITECTURE.md, "Error policy").
//
// Exceptions end an operation. They are caught in main() (one line on stderr, exit code from
// exit_code()) and at the evaluator boundary (a failed candidate becomes a FAIL row). Assertions
// are for programmer errors only, never for user input.
#pragma once

#include <stdexcept>
#include <string>

namespace sparsetune {

// Base of every error sparsetune throws on purpose. what() is the whole one-line message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // Process exit code when this error reaches main(): 2 bad input or usage, 1 failure while running.
  virtual int exit_code() const { return 1; }
};

// Bad input from the user: a config, schedule, trace or CLI argument that is missing or invalid.
// The message names the file and the field.
class InputError : public Error {
 public:
  explicit InputError(const std::string& message) : Error(message) {}
  int exit_code() const override { return 2; }
};

// A tensor handed to an op boundary has the wrong shape, dtype, device or contents.
class ShapeError : public InputError {
 public:
  explicit ShapeError(const std::string& message) : InputError(message) {}
};

// The results store cannot be opened, has a newer schema, or a query failed.
class StoreError : public Error {
 public:
  StoreError(const std::string& message, bool bad_input) : Error(message), bad_input_(bad_input) {}
  int exit_code() const override { return bad_input_ ? 2 : 1; }

 private:
  bool bad_input_;
};

// Something failed while running (I/O failure mid-job, a kernel error, ...).
class RunError : public Error {
 public:
  explicit RunError(const std::string& message) : Error(message) {}
};

}  // namespace sparsetune
