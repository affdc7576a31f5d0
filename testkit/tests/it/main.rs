//! Integration tests of the test parts themselves against the real Docker engine: the Debian stand-ins
//! (`testkit::real`) run the stack's own files (`make setup` provides docker, mmdebstrap and QEMU).

mod real;
