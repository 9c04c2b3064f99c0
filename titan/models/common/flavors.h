// A family's table of named flavors, and the lookup every family's flavor() makes.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "titan/common/error.h"

namespace titan::models::common {

template <class Args>
struct NamedFlavor {
  const char* name;
  Args args;
};

template <class Args>
std::vector<std::string> flavor_names_of(const std::vector<NamedFlavor<Args>>& table) {
  std::vector<std::string> names;
  for (const auto& f : table) names.emplace_back(f.name);
  return names;
}

// The flavor `name` of `table`; titan::Error naming it and listing the known ones (with `note`
// in front of the list, when given) for a name the family does not have.
template <class Args>
const Args& find_flavor(const std::vector<NamedFlavor<Args>>& table, std::string_view name, const std::string& family,
                        const std::string& why = "") {
  for (const auto& f : table)
    if (name == f.name) return f.args;
  std::string known;
  for (const auto& n : flavor_names_of(table)) known += (known.empty() ? "" : ", ") + n;
  throw Error("model.flavor = \"" + std::string(name) + "\" " + (why.empty() ? "is not a " + family + " flavor" : why),
              "use " + (why.empty() ? std::string("one of: ") : "a " + family + " flavor: ") + known);
}

}  // namespace titan::models::common
