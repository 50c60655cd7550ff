-- POST /api/<col>/_insertMany: two documents per request, unique _ids.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local threads, counter = 0, 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = string.format(
    '[{"_id":"m%d-%d-a","name":"user %d","age":%d},{"_id":"m%d-%d-b","name":"user %d","age":%d}]',
    tid, counter, counter, counter % 90, tid, counter, counter, counter % 90)
  return wrk.format(nil, nil, nil, body)
end
