"""What every CLAMP package shares, importable without ROS: the rig contract (`rig`), robot profiles
(`profile`), safety limits (`safety`), geometry, the episode-bag schema and I/O (`episode_bag`) and
typed config loading (`config`). `ros` and `msg_conversions` are the ROS side: helpers every node
uses, importing rclpy and message packages only when called or imported themselves."""
