// Text from files and requests made safe to print on a terminal.
//
// Strings in a GGUF file (a model's name, its metadata, its chat template) come from whoever
// made the file; printed raw, an ESC byte starts a terminal escape sequence (it can retitle the
// window, move the cursor, hide text). Printable() writes such bytes as visible escapes.
//
// Thread-safety: pure functions.
#ifndef FERRY_BASE_PRINTABLE_H_
#define FERRY_BASE_PRINTABLE_H_

#include <string>
#include <string_view>

namespace ferry {

// `text` with every control character written as an escape: C0 controls and DEL as "\xNN"
// ("\n" and "\t" too unless `multiline`), C1 controls (U+0080..U+009F) as "\u0080"..."\u009F",
// bytes that are not valid UTF-8 as "\xNN", and a backslash as "\\" (so the output is
// unambiguous). Valid printable UTF-8 passes unchanged.
std::string Printable(std::string_view text, bool multiline = false);

}  // namespace ferry

#endif  // FERRY_BASE_PRINTABLE_H_
