// Random search: `population` uniformly random genomes per generation for generations + 1
// generations, no seeds and no repair. The baseline a smarter strategy has to beat, and a simple
// driver for tests of the job loop.
#pragma once

#include "search/generational.h"

namespace sparsetune {

class RandomSearch : public GenerationalStrategy {
 public:
  explicit RandomSearch(const StrategyContext& context);
  int64_t planned() const override;

 protected:
  std::vector<Proposal> initial() override { return Draw(); }
  std::vector<Proposal> breed() override { return Draw(); }
  void generation_done(const std::vector<Evaluated>& results) override {}

 private:
  std::vector<Proposal> Draw();
};

}  // namespace sparsetune
