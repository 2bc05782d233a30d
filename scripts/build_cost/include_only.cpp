// build_cost: #include <lqer/lqer.hpp> alone.
#include <lqer/lqer.hpp>
