# Fetch users from objcached with Dalli (Debian: ruby-dalli).
#
#     ruby example.rb [ADDRESS]     ADDRESS: 127.0.0.1:11311 (default) or
#                                   /path/to.sock
#
# NOT SERVED YET: Debian 12's Dalli (3.0.6) speaks only memcached's binary
# protocol, which objcached does not answer; Dalli 3.2+ speaks the meta
# protocol (mg/mn), which objcached does not answer yet either. See
# docs/client.md. This program is what will work once the server does.
require 'dalli'
require 'json'

addr = (ARGV[0] || '127.0.0.1:11311').delete_prefix('unix:')
# raw: true stores and returns strings as they are (no Ruby Marshal).
client = Dalli::Client.new(addr, raw: true, socket_timeout: 6, socket_max_failures: 1)
keys = ['User:1', 'User:2', 'User:999999']
found = client.get_multi(*keys)
keys.each do |key|
  if found.key?(key)
    user = JSON.parse(found[key])
    puts "#{key} = #{user['name']} <#{user['email']}>"
  else
    puts "#{key}: not found"
  end
end
