// API tokens: list, create (the clear token is shown once), revoke.
#include "cli/api_commands.h"
#include "cli/render.h"
#include "proto/api_types.h"

namespace kiln::cli {

using json = nlohmann::json;

int token_list(Session& s, const Args&) {
  auto r = s.call("GET", api_path({"tokens"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto tokens = s.decoded_all(items_of(r->body), proto::token_from_json);
  if (!tokens) return s.failure_code();
  auto t = token_table();
  for (const auto& tok : *tokens) add_token_row(t, tok);
  t.print(s.out());
  return kExitOk;
}

int token_create(Session& s, const Args& a) {
  if (!proto::parse_scope(a.scope)) return s.usage("--scope must be 'read' or 'admin'");
  const json body = {{"name", a.name}, {"scope", a.scope}};
  auto r = s.call("POST", api_path({"tokens"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto tok = s.decoded(proto::token_from_json(r->body));
  if (!tok) return s.failure_code();
  // The clear token travels beside the resource, in "token".
  const auto clear = r->body.find("token");
  if (clear == r->body.end() || !clear->is_string()) {
    s.unexpected_response("token: property 'token' must be a string");
    return s.failure_code();
  }
  // The token alone on stdout (so `TOKEN=$(kiln token create ...)` works); the rest on stderr.
  s.out() << clear->get<std::string>() << "\n";
  s.err() << "kiln: created token " << tok->id << " '" << tok->name << "' with scope "
          << to_string(tok->scope) << "; it is shown only this once\n";
  return kExitOk;
}

int token_revoke(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"tokens", a.id}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "token " << a.id << " revoked\n";
  return kExitOk;
}

}  // namespace kiln::cli
