// Check(ok): the fuzz targets' assertion. A false `ok` traps, which libFuzzer reports as a
// crash with the input that caused it (assert() would be compiled out in release builds).
#ifndef FERRY_FUZZ_FUZZ_CHECK_H_
#define FERRY_FUZZ_FUZZ_CHECK_H_

namespace ferry::fuzz {

inline void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace ferry::fuzz

#endif  // FERRY_FUZZ_FUZZ_CHECK_H_
