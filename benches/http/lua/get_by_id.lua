-- GET /api/<col>/<id> of a random preloaded document (ids doc-000000 .. doc-<N-1>).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local n = tonumber(os.getenv("BENCH_DOCS") or "100000")
local path = os.getenv("BENCH_COL_PATH") or "/api/pre/"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed(os.time() * 1000 + tid)
end
function request()
  return wrk.format("GET", string.format("%sdoc-%06d", path, math.random(0, n - 1)))
end
