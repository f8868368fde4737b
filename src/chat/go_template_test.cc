#include "chat/go_template.h"

#include <gtest/gtest.h>

namespace ferry::chat {
namespace {

GoTemplate MustParse(std::string_view text) {
  auto t = GoTemplate::Parse(text);
  EXPECT_TRUE(t.ok()) << text << ": " << t.status().ToString();
  if (!t.ok()) return *GoTemplate::Parse("");
  return *std::move(t);
}

std::string Render(std::string_view text, const TemplateData& data) {
  GoTemplate t = MustParse(text);
  std::string out;
  Status s = t.Render(data, &out);
  EXPECT_TRUE(s.ok()) << text << ": " << s.ToString();
  return out;
}

std::string Chat(std::string_view text, const std::vector<Message>& messages) {
  auto out = RenderChat(MustParse(text), messages);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? *out : "";
}

const std::vector<Message> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};

// ---- Templates from Ollama's library, rendered for a multi-turn conversation. ----

TEST(GoTemplateTest, ChatMl) {
  constexpr std::string_view kChatMl =
      "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end "
      "}}<|im_start|>assistant\n";
  EXPECT_EQ(Chat(kChatMl, kConversation),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\n");
}

// llama3's library template (the legacy .System/.Prompt/.Response form): each turn is rendered
// in full, the last one up to {{ .Response }}.
TEST(GoTemplateTest, Llama3Legacy) {
  constexpr std::string_view kLlama3 =
      "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ "
      "end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt "
      "}}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response "
      "}}<|eot_id|>";
  EXPECT_FALSE(MustParse(kLlama3).UsesMessages());
  EXPECT_EQ(Chat(kLlama3, kConversation),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// llama3.2's .Messages form (tool parts left out).
TEST(GoTemplateTest, Llama32Messages) {
  constexpr std::string_view kLlama32 = R"(<|start_header_id|>system<|end_header_id|>

{{ if .System }}{{ .System }}{{ end }}<|eot_id|>
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }})";
  EXPECT_TRUE(MustParse(kLlama32).UsesMessages());
  EXPECT_EQ(Chat(kLlama32, kConversation),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // A prefilled assistant answer stays open.
  EXPECT_EQ(Chat(kLlama32, {{"user", "Hi"}, {"assistant", "Hel"}}),
            "<|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHel");
}

// gemma3's library template.
TEST(GoTemplateTest, Gemma) {
  constexpr std::string_view kGemma = R"({{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }})";
  EXPECT_EQ(Chat(kGemma, kConversation),
            "<start_of_turn>user\nBe brief.<end_of_turn>\n"
            "<start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n"
            "<start_of_turn>model\n");
}

// mistral's library template (v0.3, tool calls left out): the system prompt goes into the last
// user turn.
TEST(GoTemplateTest, Mistral) {
  constexpr std::string_view kMistral = R"({{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and $.Tools (le (len (slice $.Messages $i)) 2) }}[AVAILABLE_TOOLS] {{ json $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}</s>
{{- end }}
{{- end }}
{{- end }})";
  EXPECT_EQ(Chat(kMistral, kConversation),
            "[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nBye[/INST]");
}

// The legacy form with a ChatML body: a system message in the middle closes the turn before it,
// and the last turn is cut after {{ .Response }}.
TEST(GoTemplateTest, LegacyChatMlTurns) {
  constexpr std::string_view kLegacy =
      "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt "
      "}}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response "
      "}}<|im_end|>\n";
  EXPECT_EQ(Chat(kLegacy, {{"user", "a"}, {"assistant", "b"}, {"system", "s"}, {"user", "c"}}),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
            "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Consecutive messages of one role are joined; a trailing assistant message is a prefill.
  EXPECT_EQ(Chat(kLegacy, {{"user", "a"}, {"user", "b"}, {"assistant", "Par"}}),
            "<|im_start|>user\na\n\nb<|im_end|>\n<|im_start|>assistant\nPar");
}

TEST(GoTemplateTest, CollateForMessages) {
  constexpr std::string_view kT =
      "[{{ .System }}]{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}";
  EXPECT_EQ(Chat(kT, {{"system", "s1"},
                      {"system", "s2"},
                      {"user", "a"},
                      {"user", "b"},
                      {"tool", "t1"},
                      {"tool", "t2"}}),
            "[s1\n\ns2]system:s1\n\ns2;user:a\n\nb;tool:t1;tool:t2;");
}

TEST(GoTemplateTest, Infill) {
  GoTemplate t = MustParse(
      "{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
      "{{- else }}{{ .Prompt }}{{- end }}");
  EXPECT_TRUE(t.UsesSuffix());
  EXPECT_FALSE(t.UsesMessages());
  auto out = RenderInfill(t, "def f(", "return 1");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "<|fim_prefix|>def f(<|fim_suffix|>return 1<|fim_middle|>");
}

TEST(GoTemplateTest, UsesAndAppendedResponse) {
  // Ollama appends {{ .Response }} to a template with neither .Messages nor .Response.
  GoTemplate t = MustParse("{{ .Prompt }}");
  EXPECT_TRUE(t.UsesResponse());
  EXPECT_FALSE(t.UsesSuffix());
  TemplateData d;
  d.prompt = "p";
  d.response = "r";
  std::string out;
  ASSERT_TRUE(t.Render(d, &out).ok());
  EXPECT_EQ(out, "pr");
  EXPECT_EQ(Render("{{ .Prompt }}|{{ .Response }}", d), "p|r");
  EXPECT_EQ(Render("{{ range .Messages }}{{ end }}{{ .Prompt }}", d), "p");
  EXPECT_TRUE(MustParse("{{ $.Messages }}").UsesMessages());
  EXPECT_FALSE(MustParse("{{ .System }}").UsesMessages());
}

TEST(GoTemplateTest, CutAfterResponse) {
  GoTemplate t = MustParse("A{{ if .Prompt }}P{{ .Response }}X{{ else }}E{{ end }}Y{{ .System }}");
  TemplateData d;
  d.prompt = "p";
  d.response = "r";
  d.system = "s";
  std::string full, cut;
  ASSERT_TRUE(t.Render(d, &full).ok());
  ASSERT_TRUE(t.CutAfterResponse().Render(d, &cut).ok());
  EXPECT_EQ(full, "APrXYs");
  EXPECT_EQ(cut, "APr");
  // An if-condition naming .Response does not cut.
  std::string c2;
  ASSERT_TRUE(MustParse("{{ if .Response }}a{{ end }}b").CutAfterResponse().Render(d, &c2).ok());
  EXPECT_EQ(c2, "ab");
}

// ---- Trimming, comments, literals. ----

TEST(GoTemplateTest, Trimming) {
  TemplateData d;
  d.prompt = "X";
  EXPECT_EQ(Render("a \t\r\n {{- .Prompt -}} \n\n b", d), "aXb");
  EXPECT_EQ(Render("a {{ .Prompt }} b", d), "a X b");
  EXPECT_EQ(Render("a\n{{- .Prompt }}\nb", d), "aX\nb");
  EXPECT_EQ(Render("a\n{{ .Prompt -}}\n\nb", d), "a\nXb");
  EXPECT_EQ(Render("{{.Prompt}}{{.Prompt -}} {{- .Prompt}}", d), "XXX");
  EXPECT_EQ(Render("a\n{{-\n.Prompt\n-}}\nb", d), "aXb");  // a newline after - also marks
  EXPECT_EQ(Render("{{-3}}", d), "-3");                    // a number, not a trim marker
  EXPECT_EQ(Render("{{ 3 -}}  x", d), "3x");
  EXPECT_EQ(Render("a {{- /* comment */ -}} b", d), "ab");
  EXPECT_EQ(Render("a {{/* multi\nline */}} b", d), "a  b");
  EXPECT_EQ(Render("x\n{{- if true }}\n  y\n{{- end }}\n", d), "x\n  y\n");
  // Trimming a whole text node away.
  EXPECT_EQ(Render("{{ .Prompt -}}   \n  {{- .Prompt }}", d), "XX");
}

TEST(GoTemplateTest, Literals) {
  TemplateData d;
  EXPECT_EQ(Render(R"({{ "a\tb\n\"q\"\\\x41\u00e9" }})", d), "a\tb\n\"q\"\\A\xc3\xa9");
  EXPECT_EQ(Render("{{ `raw\\n` }}", d), "raw\\n");
  EXPECT_EQ(Render("{{ 42 }} {{ -7 }} {{ 0x10 }} {{ true }} {{ false }}", d),
            "42 -7 16 true false");
}

// ---- Functions. ----

TEST(GoTemplateTest, AndOrReturnTheDecidingArgument) {
  TemplateData d;
  d.prompt = "p";
  EXPECT_EQ(Render("{{ and 1 0 2 }}", d), "0");
  EXPECT_EQ(Render("{{ and 1 2 }}", d), "2");
  EXPECT_EQ(Render("{{ or 0 \"\" \"x\" 3 }}", d), "x");
  EXPECT_EQ(Render("[{{ or 0 \"\" }}]", d), "[]");
  EXPECT_EQ(Render("[{{ and .Prompt .System }}]", d), "[]");
  EXPECT_EQ(Render("{{ or .System .Prompt }}", d), "p");
  // Short-circuit: the argument after the deciding one is not evaluated.
  EXPECT_EQ(Render("{{ and false (index .Messages 5) }}", d), "false");
  EXPECT_EQ(Render("{{ or true (index .Messages 5) }}", d), "true");
  std::string out;
  EXPECT_FALSE(MustParse("{{ and true (index .Messages 5) }}").Render(d, &out).ok());
}

TEST(GoTemplateTest, Comparisons) {
  TemplateData d;
  d.prompt = "b";
  EXPECT_EQ(Render("{{ eq .Prompt \"a\" \"b\" \"c\" }} {{ eq .Prompt \"a\" \"c\" }}", d),
            "true false");
  EXPECT_EQ(
      Render("{{ lt 1 2 }}{{ le 2 2 }}{{ gt \"b\" \"a\" }}{{ ge 1 2 }}{{ ne \"a\" \"a\" }}", d),
      "truetruetruefalsefalse");
  EXPECT_EQ(Render("{{ not .Messages }} {{ not .Prompt }}", d), "true false");
  EXPECT_EQ(Render("{{ eq nil nil }} {{ eq .Prompt nil }}", d), "true false");
  d.messages = {{"user", "u"}};
  // Piped value goes last: eq .Role "user".
  EXPECT_EQ(Render("{{ range .Messages }}{{ \"user\" | eq .Role }}{{ end }}", d), "true");
}

TEST(GoTemplateTest, SliceIndexLen) {
  TemplateData d;
  d.prompt = "hello";
  d.messages = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
  EXPECT_EQ(Render("{{ slice .Prompt 1 3 }} {{ slice .Prompt 2 }} {{ slice .Prompt }}", d),
            "el llo hello");
  EXPECT_EQ(Render("{{ (index .Messages 1).Content }} {{ index .Prompt 0 }}", d), "b 104");
  EXPECT_EQ(Render("{{ len .Messages }} {{ len (slice .Messages 1) }} {{ .Prompt | len }}", d),
            "3 2 5");
  EXPECT_EQ(Render("{{ range slice .Messages 1 2 }}{{ .Content }}{{ end }}", d), "b");
  EXPECT_EQ(Render("{{ (index (slice .Messages 1) 1).Role }}", d), "user");
  EXPECT_EQ(Render("{{ len .Tools }}{{ .Tools }}", d), "0[]");
  for (std::string_view bad :
       {"{{ index .Messages 3 }}", "{{ index .Messages -1 }}", "{{ slice .Prompt 3 1 }}",
        "{{ slice .Prompt 0 9 }}", "{{ (index .Messages 9).Role }}"}) {
    std::string out;
    Status s = MustParse(bad).Render(d, &out);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("line 1"), std::string::npos) << s.ToString();
  }
}

TEST(GoTemplateTest, Json) {
  TemplateData d;
  d.prompt = "<a>\"&\n";
  d.messages = {{"user", "x"}};
  EXPECT_EQ(Render("{{ json .Prompt }} {{ json .Tools }} {{ json .Messages }} {{ json 3 }}", d),
            R"("\u003ca\u003e\"\u0026\n" null [{"role":"user","content":"x"}] 3)");
}

// ---- Control structures and variables. ----

TEST(GoTemplateTest, RangeElseAndVariables) {
  TemplateData d;
  d.system = "S";
  EXPECT_EQ(Render("{{ range .Messages }}x{{ else }}none{{ end }}", d), "none");
  d.messages = {{"user", "a"}, {"assistant", "b"}};
  EXPECT_EQ(Render("{{ range .Messages }}x{{ else }}none{{ end }}", d), "xx");
  EXPECT_EQ(Render("{{ range .Messages }}{{ $.System }}:{{ .Content }};{{ end }}", d), "S:a;S:b;");
  EXPECT_EQ(Render("{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }} {{ end }}", d),
            "0=user 1=assistant ");
  EXPECT_EQ(Render("{{ range $m := .Messages }}{{ $m.Content }}{{ end }}", d), "ab");
  EXPECT_EQ(Render("{{ $x := \"a\" }}{{ if .System }}{{ $x = .System }}{{ end }}{{ $x }}", d), "S");
  EXPECT_EQ(Render("{{ with .System }}[{{ . }}]{{ else }}none{{ end }}"
                   "{{ with .Prompt }}[{{ . }}]{{ else }}none{{ end }}",
                   d),
            "[S]none");
  EXPECT_EQ(Render("{{ if .Prompt }}p{{ else if eq .System \"T\" }}t{{ else if .System }}s"
                   "{{ else }}n{{ end }}",
                   d),
            "s");
  EXPECT_EQ(Render("{{ if $x := .System }}{{ $x }}{{ end }}", d), "S");
  EXPECT_EQ(Render("{{ range .Tools }}{{ .Function.Name }}{{ else }}no tools{{ end }}", d),
            "no tools");
}

// ---- Parse errors: each is InvalidArgument with the line and byte offset. ----

TEST(GoTemplateTest, ParseErrors) {
  struct Case {
    std::string_view text;
    std::string_view want;  // a piece of the message
  };
  const Case kCases[] = {
      {"{{ .Prompt", "unclosed action"},
      {"{{ .Prompt }", "unexpected character '}'"},
      {"{{ if .System }}x", "unclosed {{ if }}"},
      {"{{ range .Messages }}x", "unclosed {{ range }}"},
      {"{{ with .System }}x{{ else }}", "unclosed {{ with }}"},
      {"x{{ end }}", "unexpected {{ end }}"},
      {"{{ else }}", "unexpected {{ else }}"},
      {"{{ .Foo }}", "byte 3: unknown field .Foo"},
      {"{{ .system }}", "unknown field .system"},
      {"{{ range .Messages }}{{ .System }}{{ end }}", "unknown field .System of a message"},
      {"{{ .Prompt.Role }}", "can't evaluate field .Role in type string"},
      {"{{ $.Messages.Role }}", "can't evaluate field .Role in type list of messages"},
      {"{{ foo 1 }}", "function \"foo\" not defined"},
      {"{{ printf \"%s\" .Prompt }}", "function \"printf\" is not supported"},
      {"{{ template \"x\" }}", "{{ template }} is not supported"},
      {"{{ define \"x\" }}{{ end }}", "{{ define }} is not supported"},
      {"{{/* unclosed", "unclosed comment"},
      {"{{/* c */ x }}", "comment ends before closing delimiter"},
      {"{{ /* c */ }}", "unexpected character"},
      {"{{ \"abc }}", "unterminated quoted string"},
      {"{{ `abc }}", "unterminated raw quoted string"},
      {"{{ \"\\q\" }}", "unknown escape sequence"},
      {"{{ 1.5 }}", "only integer numbers"},
      {"{{ 'a' }}", "character constants"},
      {"{{ $x }}", "undefined variable $x"},
      {"{{ range $m := .Messages }}{{ end }}{{ $m }}", "undefined variable $m"},
      {"{{ }}", "missing value for command"},
      {"{{ if }}{{ end }}", "missing value for if"},
      {"{{ len }}", "wrong number of args for len: want 1 got 0"},
      {"{{ eq 1 }}", "wrong number of args for eq: want at least 2 got 1"},
      {"{{ not 1 2 }}", "wrong number of args for not"},
      {"{{ not len }}", "used as an argument"},
      {"{{ .Prompt 1 }}", "can't give an argument to a non-function"},
      {"{{ .Prompt | .System }}", "can't give an argument to a non-function"},
      {"{{ .Prompt | }}", "missing command after"},
      {"{{ eq .Prompt 1 }}", "incompatible types for comparison"},
      {"{{ lt true false }}", "invalid type for comparison"},
      {"{{ len 3 }}", "len of int"},
      {"{{ .Prompt | slice 1 }}", "slice: index of type string"},
      {"{{ slice 1 2 }}", "can't slice item of type int"},
      {"{{ slice .Prompt 1 2 3 }}", "cannot 3-index slice a string"},
      {"{{ range .Prompt }}{{ end }}", "range can't iterate over string"},
      {"{{ range .Messages }}{{ else if .System }}{{ end }}", "{{ else if }} inside {{ range }}"},
      {"{{ if 1 }}{{ else }}{{ else }}{{ end }}", "second {{ else }}"},
      {"{{ $x, $y := .Prompt }}", "too many declarations in command"},
      {"{{ $x = 1 }}", "undefined variable $x"},
      {"{{ .Prompt\"x\" }}", "bad character"},
      {"{{ .Prompt \"x\"}}", "can't give an argument"},
      {"{{ (len .Messages }}", "unexpected \"}}\" in parenthesized pipeline"},
      {"{{ nil }}", "nil is not a command"},
      {"{{ break }}", "{{ break }} is not supported"},
      {"{{ 3.Prompt }}", "only integer numbers"},
      {"{{ \"a\".Prompt }}", "after a literal"},
  };
  for (const Case& c : kCases) {
    auto t = GoTemplate::Parse(c.text);
    ASSERT_FALSE(t.ok()) << c.text;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(t.status().message().find(c.want), std::string::npos)
        << c.text << " -> " << t.status().message();
    EXPECT_NE(t.status().message().find("line "), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find("byte "), std::string::npos) << t.status().message();
  }
  std::string deep = "{{ len " + std::string(200, '(') + ".Prompt" + std::string(200, ')') + " }}";
  EXPECT_FALSE(GoTemplate::Parse(deep).ok());
  std::string nested;
  for (int k = 0; k < 200; ++k) nested += "{{ if true }}";
  for (int k = 0; k < 200; ++k) nested += "{{ end }}";
  EXPECT_FALSE(GoTemplate::Parse(nested).ok());
  EXPECT_TRUE(GoTemplate::Parse("{{ len ((((.Prompt)))) }}").ok());
  auto t = GoTemplate::Parse("a\nb\n  {{ .Foo }}");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 3, byte 9"), std::string::npos) << t.status().message();
}

TEST(GoTemplateTest, RenderErrors) {
  TemplateData d;
  d.prompt = "x";
  std::string out;
  // Only execution knows the value: a variable of either type compared with an int.
  Status s = MustParse("{{ $v := or .System 1 }}{{ eq $v \"a\" }}").Render(d, &out);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("incompatible types"), std::string::npos) << s.ToString();
  out.clear();
  s = MustParse("a\n{{ range .Messages }}{{ end }}{{ .Messages }}").Render(d, &out);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("line 2"), std::string::npos) << s.ToString();
  EXPECT_EQ(out, "a\n");
}

// ---- Hostile templates are bounded (a /api/generate request may carry its own template). ----

// 14 ranges over 4 messages nested around `body`: 4^14 iterations.
std::string NestedRanges(std::string_view body) {
  std::string text = "{{ range .Messages }}";
  for (int k = 1; k < 14; ++k) text += "{{ range $.Messages }}";
  text += body;
  for (int k = 0; k < 14; ++k) text += "{{ end }}";
  return text;
}

// Found writing fuzz/go_template_fuzz (a timeout there): 14 nested ranges over 4 messages
// (378 bytes of template) ran 4^14 iterations; the request never ended.
TEST(GoTemplateTest, NestedRangesRunOutOfSteps) {
  const std::vector<Message> four = {
      {"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"user", "d"}};
  // With output and without: every iteration is a step.
  for (const std::string& text :
       {NestedRanges("x"), "{{ $x := 1 }}" + NestedRanges("{{ if $x }}{{ end }}")}) {
    auto out = RenderChat(MustParse(text), four);
    ASSERT_FALSE(out.ok()) << text;
    EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(out.status().message().find("line 1: rendering takes more than"), std::string::npos)
        << out.status().ToString();
  }
}

// Found writing fuzz/go_template_fuzz (a timeout there): each json call doubles the
// backslashes of the one before, so 40 chained calls on a short .System (663 bytes of
// template) asked for terabytes of memory.
TEST(GoTemplateTest, ChainedJsonRunsOutOfBytes) {
  TemplateData d;
  d.system = "\"quoted\"";
  for (std::string text : {std::string("{{ $x := .System }}"), std::string("{{ .System")}) {
    const bool piped = text.starts_with("{{ .System");
    for (int k = 0; k < 40; ++k) text += piped ? " | json" : "{{ $x = json $x }}";
    text += piped ? " }}" : "{{ $x }}";
    std::string out;
    Status s = MustParse(text).Render(d, &out);
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << text << ": " << s.ToString();
    EXPECT_NE(s.message().find("bytes of text"), std::string::npos) << s.ToString();
    EXPECT_LE(out.size(), RenderLimitsFor(0, d.system.size()).bytes);
  }
}

// The limits grow with the data: a long conversation renders, its text copied a few times.
TEST(GoTemplateTest, LimitsGrowWithTheData) {
  const RenderLimits base = RenderLimitsFor(0, 0);
  EXPECT_EQ(base.steps, kRenderBaseSteps);
  EXPECT_EQ(base.bytes, kRenderBaseBytes);
  EXPECT_EQ(RenderLimitsFor(UINT64_MAX, UINT64_MAX).bytes, UINT64_MAX);  // saturates

  std::vector<Message> long_chat;
  for (int k = 0; k < 4000; ++k) long_chat.push_back({k % 2 ? "assistant" : "user", "hi"});
  long_chat.push_back({"user", std::string(kRenderBaseBytes, 'x')});  // past the base alone
  constexpr std::string_view kLlama32Like =
      "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
      "{{ if eq .Role \"user\" }}<u>{{ .Content }}{{ if $last }}<a>{{ end }}"
      "{{ else if eq .Role \"assistant\" }}<a>{{ .Content }}{{ if not $last }}</a>{{ end }}"
      "{{ end }}{{ end }}";
  auto out = RenderChat(MustParse(kLlama32Like), long_chat);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_GT(out->size(), kRenderBaseBytes);
  auto json = RenderChat(MustParse("{{ json .Messages }}"), long_chat);
  ASSERT_TRUE(json.ok()) << json.status().ToString();
}

}  // namespace
}  // namespace ferry::chat
